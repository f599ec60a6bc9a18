"""The gtc-secrets CLI (exec, get, put) with fakes at the project's seams: backend, admin Vault, execvpe."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from gtc_secrets import cli
from gtc_secrets.backends import SecretsBackend, make_backend
from gtc_secrets.envelope import SecretValue, open_envelope, parse_envelope
from gtc_secrets.refs import Scope, SecretRef
from gtc_secrets.resolve import BootTimeout
from gtc_secrets.seed import MAX_VALUE_BYTES, SeedError, put_secret, strip_one_newline
from gtc_secrets.settings import AdminSettings, RuntimeSettings, VaultWorkerSettings
from gtc_secrets.vault import Transport
from tests.unit.test_resolve import FakeVault

CANARY = "canary-cli-91d2-never-print-me"
SCOPE = Scope("prod", "acme", "core")
BASE = {"GREENTIC_ENV": "prod", "GREENTIC_TENANT": "acme", "GREENTIC_TEAM": "core"}


class Exec:
    """A stand-in for os.execvpe that records the call (or raises, to simulate exec failures)."""

    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []
        self.error = error

    def __call__(self, file: str, args: list[str], env: dict[str, str]) -> None:
        if self.error is not None:
            raise self.error
        self.calls.append((file, list(args), dict(env)))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / ".dev.secrets"
    path.write_text(
        json.dumps(
            {
                "prod/acme/core/llm/openai_key": CANARY,
                "prod/acme/default/telegram/bot_token": "bot-value",
                "prod/acme/core/bin/nul": "a\u0000b",
            }
        )
    )
    return path


def env_with(store: Path, **extra: str) -> dict[str, str]:
    return {**BASE, "GREENTIC_DEV_SECRETS_FILE": str(store), "PATH": "/usr/bin:/bin", **extra}


# ---------------------------------------------------------------------------------------------
# Pure parts of exec.
# ---------------------------------------------------------------------------------------------


def test_plan_finds_every_reference_and_nothing_else() -> None:
    """Only values that are references count; names are irrelevant."""
    plan = cli.plan_exec(
        {
            "OPENAI_KEY": "secret://llm/openai_key",
            "BOT": "secret://prod/acme/default/telegram/bot_token",
            "SECRET_LOOKING_NAME": "plain value",
            "URL": "https://example.com/secret://x",
            "EMPTY": "",
        },
        SCOPE,
    )
    assert plan.errors == []
    assert plan.references == {
        "OPENAI_KEY": SecretRef("prod", "acme", "core", "llm", "openai_key"),
        "BOT": SecretRef("prod", "acme", "default", "telegram", "bot_token"),
    }


def test_plan_reports_invalid_and_out_of_scope_references_by_variable() -> None:
    """Every bad reference is an error naming its variable; the worker does not start."""
    plan = cli.plan_exec(
        {
            "A": "secret://llm/../../x",
            "B": "secret://prod/globex/core/llm/key",
            "C": "secret://llm/%2e%2e",
            "D": "secret://llm/ok",
        },
        SCOPE,
    )
    assert [e.split(":")[0] for e in plan.errors] == ["A", "B", "C"]
    assert "outside the worker's tenant" in plan.errors[1]
    assert list(plan.references) == ["D"]


def test_plan_refuses_near_misses_without_showing_the_value() -> None:
    """SECRET://, secret:/ and friends fail closed; the value may itself be a secret, so it is not shown."""
    plan = cli.plan_exec({"X": f"Secret:{CANARY}", "Y": f" secret://{CANARY}"}, SCOPE)
    assert len(plan.errors) == 2
    assert all("value not shown" in e for e in plan.errors)
    assert CANARY not in "".join(plan.errors)


def test_child_environment_replaces_only_the_references() -> None:
    """Other variables are passed unchanged; references become values."""
    ref = SecretRef("prod", "acme", "core", "llm", "k")
    environ = {"K": ref.uri, "HOME": "/home/w", "X": "1"}
    env = cli.child_environment(environ, {"K": ref}, {ref: SecretValue(b"v")})
    assert env == {"K": "v", "HOME": "/home/w", "X": "1"}
    assert environ["K"] == ref.uri  # the input mapping is not modified


# ---------------------------------------------------------------------------------------------
# exec through main().
# ---------------------------------------------------------------------------------------------


def test_exec_passes_resolved_values_and_nothing_else_changes(store: Path) -> None:
    """The child gets the same environment, except that each reference became its value."""
    environ = env_with(
        store,
        OPENAI_API_KEY="secret://llm/openai_key",
        TELEGRAM_TOKEN="secret://prod/acme/default/telegram/bot_token",
        LOG_LEVEL="debug",
    )
    execvpe = Exec()
    code = cli.main(["exec", "--", "worker", "--port", "8080"], environ, execvpe=execvpe)
    assert code == 0
    ((file, args, env),) = execvpe.calls
    assert (file, args) == ("worker", ["worker", "--port", "8080"])
    assert env == {**environ, "OPENAI_API_KEY": CANARY, "TELEGRAM_TOKEN": "bot-value"}


def test_exec_without_double_dash(store: Path) -> None:
    """`gtc-secrets exec CMD ARGS` works too."""
    execvpe = Exec()
    assert cli.main(["exec", "worker", "-v"], env_with(store), execvpe=execvpe) == 0
    assert execvpe.calls[0][1] == ["worker", "-v"]


def test_exec_without_references_needs_no_store(tmp_path: Path) -> None:
    """No references: the command runs with the environment as is, even without a dev secrets file."""
    execvpe = Exec()
    environ = env_with(tmp_path / "missing.json", A="1")
    assert cli.main(["exec", "--", "worker"], environ, execvpe=execvpe) == 0
    assert execvpe.calls[0][2] == environ


@pytest.mark.parametrize(
    ("error", "code", "needle"),
    [
        (FileNotFoundError(2, "No such file or directory"), 127, "command not found"),
        (PermissionError(13, "Permission denied"), 126, "permission denied"),
        (OSError(8, "Exec format error"), 126, "cannot execute (Exec format error)"),
    ],
)
def test_exec_failures_use_shell_exit_codes(
    store: Path, capfd: pytest.CaptureFixture[str], error: OSError, code: int, needle: str
) -> None:
    """A command that cannot run: 127 (not found) or 126 (not executable), and no value on stderr."""
    environ = env_with(store, OPENAI_API_KEY="secret://llm/openai_key")
    assert cli.main(["exec", "--", "worker"], environ, execvpe=Exec(error)) == code
    err = capfd.readouterr().err
    assert needle in err
    assert CANARY not in err


def test_exec_missing_command_is_a_usage_error(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`gtc-secrets exec` and `gtc-secrets exec --` need a command: exit 2."""
    assert cli.main(["exec"], env_with(store), execvpe=Exec()) == 2
    assert cli.main(["exec", "--"], env_with(store), execvpe=Exec()) == 2
    assert "missing command" in capfd.readouterr().err


def test_exec_missing_secret_never_starts_the_worker(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """One missing secret: exit 1, the reference named, the command never executed."""
    execvpe = Exec()
    environ = env_with(store, OPENAI_API_KEY="secret://llm/openai_key", OTHER="secret://llm/absent")
    assert cli.main(["exec", "--", "worker"], environ, execvpe=execvpe) == 1
    assert execvpe.calls == []
    err = capfd.readouterr().err
    assert "secret://prod/acme/core/llm/absent" in err
    assert CANARY not in err


def test_exec_invalid_references_never_start_the_worker(
    store: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Out-of-scope or malformed references: exit 1 before any backend I/O, each variable named."""

    def no_backend(settings: RuntimeSettings) -> SecretsBackend:
        raise AssertionError("no backend may be made for invalid references")

    environ = env_with(store, A="secret://prod/globex/core/llm/key", B="secret://llm/../../x")
    execvpe = Exec()
    assert cli.main(["exec", "--", "worker"], environ, execvpe=execvpe, backend_factory=no_backend) == 1
    err = capfd.readouterr().err
    assert "  - A: invalid secret reference" in err
    assert "  - B: invalid secret reference" in err
    assert execvpe.calls == []


def test_exec_value_that_cannot_be_an_env_var(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A value with a NUL byte is refused, naming the variable and reference only."""
    environ = env_with(store, BIN="secret://bin/nul")
    assert cli.main(["exec", "--", "worker"], environ, execvpe=Exec()) == 1
    err = capfd.readouterr().err
    assert "BIN=secret://prod/acme/core/bin/nul" in err
    assert "NUL" in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"GREENTIC_SECRETS_BACKEND": "consul"}, "'consul' is not a known secrets backend"),
        ({"GREENTIC_TENANT": ""}, "GREENTIC_TENANT is not set"),
        ({"GREENTIC_SECRETS_BACKEND": "vault", "VAULT_ADDR": "http://vault:8200"}, "must be an https:// URL"),
    ],
)
def test_exec_configuration_errors_exit_3(
    store: Path, capfd: pytest.CaptureFixture[str], extra: dict[str, str], needle: str
) -> None:
    """Unknown backend and bad settings fail closed with exit 3, naming the variable or value."""
    execvpe = Exec()
    environ = env_with(store, OPENAI_API_KEY="secret://llm/openai_key", **extra)
    assert cli.main(["exec", "--", "worker"], environ, execvpe=execvpe) == 3
    assert needle in capfd.readouterr().err
    assert execvpe.calls == []


def test_exec_vault_unavailable_exits_4(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Vault down for the whole boot timeout: exit 4 with the reason."""

    class Down:
        name = "vault"

        async def resolve(self, refs: object) -> dict[SecretRef, SecretValue]:
            raise BootTimeout("resolving 1 secret reference(s) from https://v", 0.5, 3, None)

    environ = env_with(store, OPENAI_API_KEY="secret://llm/openai_key")
    assert cli.main(["exec", "--", "w"], environ, execvpe=Exec(), backend_factory=lambda _: Down()) == 4
    assert "Vault still unavailable after 0.5s (3 attempt(s))" in capfd.readouterr().err


def test_exec_with_vault_backend_and_a_missing_token_file_exits_3(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The ServiceAccount token file is configuration: exit 3 naming the file."""
    fake = FakeVault()

    def backend(settings: RuntimeSettings) -> SecretsBackend:
        def transport(_: VaultWorkerSettings) -> Transport:
            return fake

        return make_backend(settings, transport_factory=transport)

    environ = {
        **BASE,
        "GREENTIC_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": "https://127.0.0.1:1",
        "VAULT_K8S_TOKEN_PATH": str(tmp_path / "no-token"),
        "K": "secret://llm/k",
    }
    assert cli.main(["exec", "--", "w"], environ, execvpe=Exec(), backend_factory=backend) == 3
    assert f"{tmp_path / 'no-token'} does not exist" in capfd.readouterr().err


def test_unexpected_errors_show_only_their_type(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A bug whose message would quote a value is reported as type and location only."""

    class Buggy:
        name = "dev-store"

        async def resolve(self, refs: object) -> dict[SecretRef, SecretValue]:
            raise RuntimeError(f"oops {CANARY}")

    environ = env_with(store, K="secret://llm/openai_key")
    assert cli.main(["exec", "--", "w"], environ, execvpe=Exec(), backend_factory=lambda _: Buggy()) == 1
    err = capfd.readouterr().err
    assert "internal error: RuntimeError at test_cli_runtime.py:" in err
    assert CANARY not in err


def test_no_value_in_logs_or_output_of_a_successful_exec(
    store: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Logs name variables and counts; the canary value shows up nowhere but in the child's env."""
    caplog.set_level(logging.DEBUG)
    execvpe = Exec()
    environ = env_with(store, OPENAI_API_KEY="secret://llm/openai_key", GTC_SECRETS_LOG_LEVEL="DEBUG")
    assert cli.main(["exec", "--", "w"], environ, execvpe=execvpe) == 0
    out, err = capfd.readouterr()
    assert "OPENAI_API_KEY" in caplog.text
    assert CANARY not in caplog.text + out + err
    assert execvpe.calls[0][2]["OPENAI_API_KEY"] == CANARY


# ---------------------------------------------------------------------------------------------
# get.
# ---------------------------------------------------------------------------------------------


def test_get_prints_exactly_the_value(store: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """`get REF` writes the value to stdout (no newline added) and nothing else."""
    assert cli.main(["get", "secret://prod/acme/default/telegram/bot_token"], env_with(store)) == 0
    assert capsysbinary.readouterr().out == b"bot-value"


@pytest.mark.parametrize(
    ("reference", "code", "needle"),
    [
        ("secret://prod/globex/core/llm/key", 1, "outside the worker's tenant"),
        ("secret://llm/..", 1, "segment '..'"),
        ("secret://llm/absent", 1, "no such secret"),
    ],
)
def test_get_follows_the_same_rules(
    store: Path, capfd: pytest.CaptureFixture[str], reference: str, code: int, needle: str
) -> None:
    """Same scope and grammar as exec; errors on stderr, nothing on stdout."""
    assert cli.main(["get", reference], env_with(store)) == code
    out, err = capfd.readouterr()
    assert out == ""
    assert needle in err


# ---------------------------------------------------------------------------------------------
# put.
# ---------------------------------------------------------------------------------------------


class FakeAdmin:
    """The two operator calls, over the same FakeVault the worker-side tests read from."""

    def __init__(self, vault: FakeVault) -> None:
        self.vault = vault
        self.data_keys: list[bytes] = []
        self.calls: list[tuple[str, str]] = []

    def generate_data_key(self, transit_mount: str, key: str) -> tuple[bytes, str]:
        self.calls.append(("datakey", f"{transit_mount}/datakey/plaintext/{key}"))
        data_key = os.urandom(32)
        self.data_keys.append(data_key)
        return data_key, self.vault.wrap(key, data_key)

    def write_kv(self, kv_mount: str, path: str, data: Mapping[str, object]) -> int:
        self.calls.append(("write", f"{kv_mount}/data/{path}"))
        full = f"{kv_mount}/data/{path}"
        self.vault.kv[full] = dict(data)
        self.vault.kv_versions[full] = self.vault.kv_versions.get(full, 0) + 1
        return self.vault.kv_versions[full]


ADMIN_ENV = {"VAULT_ADDR": "https://127.0.0.1:8200", "VAULT_TOKEN": "admin-token"}


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_put_from_stdin_writes_only_an_envelope(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Value on stdin: one data key from transit, one KV write of an envelope that opens to the value."""
    vault = FakeVault()
    admin = FakeAdmin(vault)
    stdin(monkeypatch, CANARY.encode() + b"\n")
    code = cli.main(
        ["put", "secret://llm/openai_key", "--env", "prod", "--tenant", "acme", "--team", "core"],
        ADMIN_ENV,
        admin_factory=lambda _: admin,
    )
    assert code == 0
    assert admin.calls == [
        ("datakey", "transit/datakey/plaintext/gtc-prod-acme"),
        ("write", "secret/data/greentic/prod/acme/core/llm/openai_key"),
    ]
    ref = SecretRef("prod", "acme", "core", "llm", "openai_key")
    stored = vault.kv["secret/data/greentic/prod/acme/core/llm/openai_key"]
    assert CANARY not in json.dumps(stored)
    envelope = parse_envelope(stored, ref, "x")
    assert open_envelope(envelope, admin.data_keys[0], ref, "x").reveal_bytes() == CANARY.encode()
    out, err = capfd.readouterr()
    assert err.splitlines() == [
        "stored secret://prod/acme/core/llm/openai_key at secret/data/greentic/prod/acme/core/llm/openai_key "
        "(envelope only), version 1"
    ]
    assert CANARY not in out + err


def test_put_of_a_new_version_says_which_workers_keep_the_old_value(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A rotation (version 2 and later): the reference, the new version, and that workers without --watch
    keep the old value until restarted. No value."""
    vault = FakeVault()
    admin = FakeAdmin(vault)
    argv = ["put", "secret://prod/acme/core/llm/openai_key"]
    for value in (b"first", CANARY.encode()):
        stdin(monkeypatch, value)
        assert cli.main(argv, ADMIN_ENV, admin_factory=lambda _: admin) == 0
    out, err = capfd.readouterr()
    assert err.splitlines()[-2:] == [
        "stored secret://prod/acme/core/llm/openai_key at secret/data/greentic/prod/acme/core/llm/openai_key "
        "(envelope only), version 2",
        "workers running `gtc-secrets exec --watch` pick up version 2 at their next check; workers without "
        "--watch keep the old value until they are restarted",
    ]
    assert out == ""
    assert CANARY not in err


@pytest.mark.usefixtures("restore_root_logging")
def test_put_to_a_plain_http_vault_needs_the_flag_and_warns(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """put against http:// refuses without GREENTIC_VAULT_INSECURE_HTTP=true (exit 3, nothing sent); with
    it, it stores the envelope and warns that VAULT_TOKEN travels unencrypted (address only)."""
    admin = FakeAdmin(FakeVault())
    argv = ["put", "secret://prod/acme/core/llm/k"]
    plain = {**ADMIN_ENV, "VAULT_ADDR": "http://vault:8200"}
    assert cli.main(argv, plain, admin_factory=lambda _: admin) == 3
    assert admin.calls == []
    assert "GREENTIC_VAULT_INSECURE_HTTP=true" in capfd.readouterr().err
    stdin(monkeypatch, CANARY.encode())
    flagged = {**plain, "GREENTIC_VAULT_INSECURE_HTTP": "true"}
    assert cli.main(argv, flagged, admin_factory=lambda _: admin) == 0
    assert [kind for kind, _ in admin.calls] == ["datakey", "write"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "VAULT_ADDR http://vault:8200 is plain http (GREENTIC_VAULT_INSECURE_HTTP=true): "
        "the operator's VAULT_TOKEN and the new data key travel unencrypted to it"
    ]
    assert CANARY not in capfd.readouterr().err + caplog.text


async def test_put_then_the_worker_resolves_it(tmp_path: Path) -> None:
    """Round trip over the fake Vault: what put stores, the worker's resolver opens."""
    vault = FakeVault()
    ref = SecretRef("prod", "acme", "core", "llm", "k")
    put_secret(FakeAdmin(vault), AdminSettings(addr="https://v", token="t"), ref, CANARY.encode())
    token = tmp_path / "t"
    token.write_text("jwt-acme")
    environ = {
        **BASE,
        "GREENTIC_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": "https://v",
        "VAULT_K8S_TOKEN_PATH": str(token),
    }
    backend = make_backend(RuntimeSettings.from_environ(environ), transport_factory=lambda _: vault)
    assert (await backend.resolve([ref]))[ref] == SecretValue(CANARY.encode())


def test_put_long_form_and_from_file(tmp_path: Path) -> None:
    """The long form needs no flags; --from-file reads the value; flags that agree are accepted."""
    vault = FakeVault()
    admin = FakeAdmin(vault)
    value = tmp_path / "value"
    value.write_bytes(b"file-value\r\n")
    ref = "secret://prod/globex/default/telegram/bot_token"
    assert (
        cli.main(
            ["put", ref, "--from-file", str(value), "--tenant", "globex"],
            ADMIN_ENV,
            admin_factory=lambda _: admin,
        )
        == 0
    )
    assert admin.calls[0] == ("datakey", "transit/datakey/plaintext/gtc-prod-globex")
    assert "secret/data/greentic/prod/globex/default/telegram/bot_token" in vault.kv


def test_put_keep_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    """--keep-trailing-newline stores the value byte for byte."""
    vault = FakeVault()
    admin = FakeAdmin(vault)
    stdin(monkeypatch, b"pem\n")
    argv = ["put", "secret://prod/acme/core/tls/key", "--keep-trailing-newline"]
    assert cli.main(argv, ADMIN_ENV, admin_factory=lambda _: admin) == 0
    ref = SecretRef("prod", "acme", "core", "tls", "key")
    envelope = parse_envelope(vault.kv["secret/data/greentic/prod/acme/core/tls/key"], ref, "x")
    assert open_envelope(envelope, admin.data_keys[0], ref, "x").reveal_bytes() == b"pem\n"


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["put", "secret://llm/k"], 2, "needs --env, --tenant, --team"),
        (["put", "secret://llm/k", "--env", "prod", "--tenant", "acme"], 2, "needs --team"),
        (["put", "secret://prod/acme/core/llm/k", "--tenant", "globex"], 2, "--tenant globex contradicts"),
        (["put", "secret://llm/../k", "--env", "prod", "--tenant", "acme", "--team", "core"], 2, "'..'"),
        (["put", "secret://llm/k", "--env", "Prod", "--tenant", "acme", "--team", "core"], 2, "--env"),
        (["put", "secret://prod/acme/core/llm/k", CANARY], 2, "never from the command line"),
        (["put", "secret://prod/acme/core/llm/k", "--value", CANARY], 2, "never from the command line"),
    ],
)
def test_put_refusals(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    needle: str,
) -> None:
    """Scope flags must be complete and agree with the reference; a value is never taken from argv."""
    admin = FakeAdmin(FakeVault())
    stdin(monkeypatch, b"value")
    assert cli.main(argv, ADMIN_ENV, admin_factory=lambda _: admin) == code
    captured = capfd.readouterr()
    assert needle in captured.err
    assert CANARY not in captured.out + captured.err
    assert admin.calls == []


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"", "refusing to store an empty value"),
        (b"\n", "refusing to store an empty value"),
        (b"\xff\xfe", "must be UTF-8 text"),
        (b"a\x00b", "must not contain a NUL byte"),
        (b"x" * (MAX_VALUE_BYTES + 1), f"larger than {MAX_VALUE_BYTES} bytes"),
    ],
)
def test_put_refuses_values_a_worker_could_not_use(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], value: bytes, needle: str
) -> None:
    """Empty, binary, NUL, oversize: exit 1 before any Vault call."""
    admin = FakeAdmin(FakeVault())
    stdin(monkeypatch, value)
    assert cli.main(["put", "secret://prod/acme/core/llm/k"], ADMIN_ENV, admin_factory=lambda _: admin) == 1
    assert needle in capfd.readouterr().err
    assert admin.calls == []


def test_put_needs_admin_credentials(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """No VAULT_TOKEN: exit 3, and stdin is not even read."""
    stdin(monkeypatch, CANARY.encode())
    assert cli.main(["put", "secret://prod/acme/core/llm/k"], {"VAULT_ADDR": "https://v:1"}) == 3
    assert "VAULT_TOKEN is not set" in capfd.readouterr().err


def test_put_vault_errors_name_the_path_not_the_value(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A Vault refusal while writing is exit 1 with the path."""

    class Refusing(FakeAdmin):
        def write_kv(self, kv_mount: str, path: str, data: Mapping[str, object]) -> int:
            raise SeedError(f"POST /v1/{kv_mount}/data/{path}: Forbidden (permission denied)")

    stdin(monkeypatch, CANARY.encode())
    refusing = Refusing(FakeVault())
    assert (
        cli.main(["put", "secret://prod/acme/core/llm/k"], ADMIN_ENV, admin_factory=lambda _: refusing) == 1
    )
    err = capfd.readouterr().err
    assert "POST /v1/secret/data/greentic/prod/acme/core/llm/k: Forbidden" in err
    assert CANARY not in err


@pytest.mark.parametrize(
    ("raw", "expected"), [(b"a\n", b"a"), (b"a\r\n", b"a"), (b"a\n\n", b"a\n"), (b"a", b"a"), (b"", b"")]
)
def test_strip_one_newline(raw: bytes, expected: bytes) -> None:
    """Exactly one trailing newline is dropped."""
    assert strip_one_newline(raw) == expected


# ---------------------------------------------------------------------------------------------
# The real console entry point, in a subprocess: real os.execvpe.
# ---------------------------------------------------------------------------------------------


def test_module_entry_point_really_execs(store: Path, tmp_path: Path) -> None:
    """`python -m gtc_secrets exec` replaces itself with the child; the child sees the value."""
    dump = tmp_path / "env.json"
    code = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    environ = env_with(store, OPENAI_API_KEY="secret://llm/openai_key", PATH=os.environ.get("PATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "gtc_secrets", "exec", "--", sys.executable, "-c", code, str(dump)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    child = json.loads(dump.read_text())
    assert child["OPENAI_API_KEY"] == CANARY
    assert CANARY not in result.stdout + result.stderr
