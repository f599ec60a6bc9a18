"""Hostile secret references are refused BEFORE any I/O, at every entry point a reference comes in by.

test_refs.py proves the grammar (traversal, percent-escapes, Unicode look-alikes, control characters,
oversize names never parse). This proves the order: ``exec``, ``get`` and ``put`` refuse such a reference
without making a backend, a Vault transport or an admin client, without reading the token file, the dev
secrets file or stdin, and without resolving the good references next to it. The seams are fakes that
record every use, so that a single call fails the test.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gtc_secrets import cli
from gtc_secrets.backends import SecretsBackend, make_backend
from gtc_secrets.refs import InvalidReference, Scope, is_reference, parse_reference
from gtc_secrets.seed import AdminVault
from gtc_secrets.settings import AdminSettings, RuntimeSettings, VaultWorkerSettings
from gtc_secrets.vault import Method, Response, Transport
from tests.unit.test_refs import HOSTILE
from tests.unit.test_resolve import PATHS, ROLE, FakeVault

SCOPE: Final = Scope("prod", "acme", "core")
GOOD: Final = "secret://llm/openai_key"
JWT: Final = "jwt-acme"  # what FakeVault accepts at login

# Beyond test_refs.HOSTILE: more ways out of the scope, and more look-alikes of "/" "." and "secret".
MORE_HOSTILE: Final = [
    "secret://prod/acme/core/../../../sys/raw",
    "secret://prod/acme/billing/llm/key",  # another team of the tenant, not the shared one
    "secret://prod/acme/core/llm/key/../../../../globex/core/llm/key",
    "secret://llm/..%2f..%2fsys",
    "secret://llm%2f..%2f../key",
    "secret://llm/key%252e%252e",
    "secret://llm/\u2044etc",  # fraction slash
    "secret://llm/\uff0fetc",  # fullwidth solidus
    "secret://llm/\u2024\u2024",  # one dot leader, twice: looks like ".."
    "secret://llm/\uff0e\uff0e",  # fullwidth full stops
    "secret://llm/key\u202egpj",  # right-to-left override
    "secret://llm/key\ufeff",  # byte order mark
    "\u0455ecret://llm/key",  # Cyrillic dze in the scheme
    "secret\uff1a//llm/key",  # fullwidth colon
    "secret://llm/k\u0435y",  # Cyrillic ie
    "secret://llm/key\x1b[2J",
    "secret://prod/acme/core/llm/" + "k" * 129,
    "secret://" + "c" * 64 + "/" + "k" * 128,
    "secret://" + "a/" * 5000 + "key",
    "secret://" + "\u00e9" * 100_000,
]
HOSTILE_REFERENCES: Final = [reference for reference, _ in HOSTILE if reference] + MORE_HOSTILE
# exec treats an env value as a reference when it starts with "secret:" in any case, after blanks (near
# misses then fail to parse); anything else is an ordinary value, a scheme spelt with a Cyrillic dze too.
AS_REFERENCES: Final = [reference for reference in HOSTILE_REFERENCES if is_reference(reference)]
NOT_REFERENCES: Final = [reference for reference in HOSTILE_REFERENCES if not is_reference(reference)]


def _id(reference: str) -> str:
    return ascii(reference)[:40]


# ---------------------------------------------------------------------------------------------
# Seams that fail the test when used.
# ---------------------------------------------------------------------------------------------


class Seams:
    """Records every use of every seam a reference could reach I/O through."""

    def __init__(self) -> None:
        self.used: list[str] = []
        self.child_env: dict[str, str] = {}

    def transport(self, settings: VaultWorkerSettings) -> Transport:
        self.used.append(f"transport to {settings.addr}")
        return NoTransport(self)

    def backend(self, settings: RuntimeSettings) -> SecretsBackend:
        self.used.append(f"backend {settings.backend}")
        return make_backend(settings, transport_factory=self.transport)

    def admin(self, settings: AdminSettings) -> AdminVault:
        self.used.append(f"admin client for {settings.addr}")
        raise AssertionError("no admin client may be made for an invalid reference")

    def execvpe(self, file: str, args: list[str], env: dict[str, str]) -> None:
        self.used.append(f"exec {file}")
        self.child_env = dict(env)


class NoTransport:
    def __init__(self, seams: Seams) -> None:
        self._seams = seams

    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        self._seams.used.append(f"{method} {path}")
        raise AssertionError("no request may be sent for an invalid reference")

    async def close(self) -> None:
        pass


class NoStdin(io.TextIOBase):
    """A stdin whose every read is recorded (``put`` must not read the value of an invalid reference)."""

    def __init__(self, seams: Seams) -> None:
        self._seams = seams

    def read(self, size: int | None = -1) -> str:
        self._seams.used.append("stdin read")
        return ""

    def isatty(self) -> bool:
        return False

    @property
    def buffer(self) -> io.BytesIO:
        self._seams.used.append("stdin read")
        return io.BytesIO(b"")


@pytest.fixture
def worker_env(tmp_path: Path) -> dict[str, str]:
    """A Vault worker's environment whose files all exist, so that only the order can keep them unread."""
    token = tmp_path / "token"
    token.write_text(JWT)
    return {
        "GREENTIC_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": "https://127.0.0.1:1",
        "VAULT_K8S_ROLE": ROLE,
        "VAULT_K8S_TOKEN_PATH": str(token),
        "GREENTIC_ENV": "prod",
        "GREENTIC_TENANT": "acme",
        "GREENTIC_TEAM": "core",
        "GREENTIC_SECRETS_BOOT_TIMEOUT": "1",
    }


# ---------------------------------------------------------------------------------------------
# Every entry point.
# ---------------------------------------------------------------------------------------------


def test_the_table_is_hostile() -> None:
    """Each reference used below really is refused by the parser (else the tests below prove nothing)."""
    for reference in HOSTILE_REFERENCES:
        with pytest.raises(InvalidReference):
            parse_reference(reference, SCOPE)


@pytest.mark.parametrize("reference", AS_REFERENCES, ids=_id)
def test_exec_refuses_before_any_io_even_the_good_references(
    reference: str, worker_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """One hostile reference among good ones: exit 1 naming its variable; no backend, no transport, no
    login, not even for the good reference, and no child."""
    seams = Seams()
    environ = {**worker_env, "A_GOOD": GOOD, "B_HOSTILE": reference, "C_GOOD": "secret://llm/other"}
    code = cli.main(["exec", "--", "worker"], environ, backend_factory=seams.backend, execvpe=seams.execvpe)
    err = capfd.readouterr().err
    assert code == cli.EXIT_RESOLVE, err
    assert seams.used == []
    assert "B_HOSTILE: " in err
    assert "A_GOOD" not in err and "C_GOOD" not in err
    assert len(err) < 2000, "the message shows the reference shortened"


@pytest.mark.parametrize("value", NOT_REFERENCES, ids=_id)
def test_exec_passes_values_that_are_not_references_through_unread(
    value: str, worker_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """A value that only looks like a reference (another scheme, a homoglyph) is not one: it is never
    looked up anywhere (Vault sees only the good reference's path) and reaches the child unchanged."""
    vault = FakeVault(jwt=JWT)
    good = parse_reference(GOOD, SCOPE)
    vault.seed(good, "good-value")
    seams = Seams()

    def backend(settings: RuntimeSettings) -> SecretsBackend:
        return make_backend(settings, transport_factory=lambda _: vault)

    environ = {**worker_env, "A_GOOD": GOOD, "B_VALUE": value}
    assert cli.main(["exec", "--", "worker"], environ, backend_factory=backend, execvpe=seams.execvpe) == 0
    assert seams.used == ["exec worker"]
    assert seams.child_env["B_VALUE"] == value
    assert seams.child_env["A_GOOD"] == "good-value"
    paths = [path for _, path, _ in vault.requests]
    assert paths == [PATHS.login(), PATHS.kv_data(good.logical_path), "transit/decrypt/gtc-prod-acme"]
    capfd.readouterr()


@pytest.mark.parametrize("backend", ["vault", "dev-store"])
@pytest.mark.parametrize("reference", HOSTILE_REFERENCES, ids=_id)
def test_get_refuses_before_any_io(
    reference: str,
    backend: str,
    worker_env: dict[str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``get`` with a hostile reference: exit 1, nothing on stdout, no backend of either kind made."""
    seams = Seams()
    store = tmp_path / "dev.secrets"
    store.write_text('{"prod/acme/core/llm/openai_key": "v"}')
    environ = {**worker_env, "GREENTIC_SECRETS_BACKEND": backend, "GREENTIC_DEV_SECRETS_FILE": str(store)}
    code = cli.main(["get", reference], environ, backend_factory=seams.backend)
    out, err = capfd.readouterr()
    assert code == cli.EXIT_RESOLVE, err
    assert seams.used == []
    assert out == ""
    assert "invalid secret reference" in err


@pytest.mark.parametrize("reference", HOSTILE_REFERENCES, ids=_id)
def test_put_refuses_before_reading_the_value_or_reaching_vault(
    reference: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``put`` with a hostile reference: exit 2; stdin (the value) is not read, no admin client is made."""
    seams = Seams()
    monkeypatch.setattr(sys, "stdin", NoStdin(seams))
    environ = {"VAULT_ADDR": "https://127.0.0.1:1", "VAULT_TOKEN": "admin-token"}
    argv = ["put", reference, "--env", "prod", "--tenant", "acme", "--team", "core"]
    code = cli.main(argv, environ, admin_factory=seams.admin)
    err = capfd.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert seams.used == []
    assert "invalid secret reference" in err or "contradicts" in err
    assert "admin-token" not in err


# ---------------------------------------------------------------------------------------------
# Whatever the text: refused with no request, or only the requests of its own in-scope path.
# ---------------------------------------------------------------------------------------------

# Characters that matter for escaping the scope, and look-alikes of them, plus the grammar's own.
_LOOK_ALIKES: Final = ["\u2044", "\uff0f", "\uff0e", "\u0455", "\u200b", "\u202e"]
_ALPHABET = st.sampled_from(
    [*"abcxyz019._-/%\\:?#@ ", "..", "/..", "%2e", "%2f", "\x00", "\n", *_LOOK_ALIKES]
)
references = st.one_of(
    st.lists(_ALPHABET, max_size=30).map(lambda parts: "secret://" + "".join(parts)),
    st.builds(
        lambda env, tenant, rest: f"secret://{env}/{tenant}/{rest}",
        st.sampled_from(["prod", "dev", "..", "pr\u043ed"]),
        st.sampled_from(["acme", "globex", "..", "acme%2f.."]),
        st.lists(_ALPHABET, max_size=20).map("".join),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reference=references)
def test_only_the_references_own_path_is_ever_requested(reference: str, worker_env: dict[str, str]) -> None:
    """For any text: if the parser refuses it, ``get`` sends nothing; if it accepts it, ``get`` sends a
    login and one KV read of exactly that reference's path inside the tenant's prefix, and nothing else."""
    vault = FakeVault(jwt=JWT)
    made: list[str] = []

    def backend(settings: RuntimeSettings) -> SecretsBackend:
        made.append(settings.backend)
        return make_backend(settings, transport_factory=lambda _: vault)

    try:
        expected = PATHS.kv_data(parse_reference(reference, SCOPE).logical_path)
    except InvalidReference:
        expected = None
    code = cli.main(["get", reference], worker_env, backend_factory=backend)
    assert code == cli.EXIT_RESOLVE  # refused, or (nothing is seeded) not found
    event("refused" if expected is None else "in scope")
    if expected is None:
        assert made == []
        assert vault.requests == []
    else:
        assert expected.startswith("secret/data/greentic/prod/acme/")
        assert [(method, path) for method, path, _ in vault.requests] == [
            ("POST", PATHS.login()),
            ("GET", expected),
        ]
