"""Backend selection, the dev-store file, and the Vault backend's wiring (fake at the Transport seam)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gtc_secrets.backends import DevStoreBackend, DevStoreError, VaultBackend, make_backend, parse_dev_store
from gtc_secrets.envelope import SecretValue
from gtc_secrets.refs import SecretRef
from gtc_secrets.resolve import Backoff, BootTimeout, MissingSecret, ResolveFailed
from gtc_secrets.settings import RuntimeSettings, SettingsError, VaultWorkerSettings
from gtc_secrets.vault import Forbidden, Transport, VaultUnavailable
from tests.unit.test_resolve import FakeVault

CANARY = "canary-dev-3c9d-never-print-me"
BASE = {"GREENTIC_ENV": "prod", "GREENTIC_TENANT": "acme", "GREENTIC_TEAM": "core"}
A = SecretRef("prod", "acme", "core", "llm", "openai_key")
B = SecretRef("prod", "acme", "default", "telegram", "bot_token")


def write_store(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------
# Selection.
# ---------------------------------------------------------------------------------------------


def test_unset_backend_selects_the_dev_store(tmp_path: Path) -> None:
    """GREENTIC_SECRETS_BACKEND unset: the dev-store, reading GREENTIC_DEV_SECRETS_FILE."""
    settings = RuntimeSettings.from_environ({**BASE, "GREENTIC_DEV_SECRETS_FILE": str(tmp_path / "s.json")})
    backend = make_backend(settings)
    assert isinstance(backend, DevStoreBackend)
    assert backend.name == "dev-store"


def test_vault_backend_selected() -> None:
    """GREENTIC_SECRETS_BACKEND=vault selects the Vault backend."""
    settings = RuntimeSettings.from_environ(
        {**BASE, "GREENTIC_SECRETS_BACKEND": "vault", "VAULT_ADDR": "https://127.0.0.1:1"}
    )
    backend = make_backend(settings)
    assert isinstance(backend, VaultBackend)
    assert backend.name == "vault"


def test_unknown_backend_never_reaches_a_backend() -> None:
    """An unknown name fails while reading the settings, naming the value: no backend is made."""
    with pytest.raises(SettingsError, match="'aws-sm' is not a known secrets backend"):
        make_backend(RuntimeSettings.from_environ({**BASE, "GREENTIC_SECRETS_BACKEND": "aws-sm"}))


# ---------------------------------------------------------------------------------------------
# dev-store.
# ---------------------------------------------------------------------------------------------


async def test_dev_store_resolves_logical_paths(tmp_path: Path) -> None:
    """Keys are logical paths <env>/<tenant>/<team>/<category>/<name>; values are strings."""
    store = write_store(
        tmp_path / ".dev.secrets",
        {A.logical_path: "value-a", B.logical_path: "value-b", "prod/acme/core/llm/unused": "x"},
    )
    values = await DevStoreBackend(store).resolve([A, B, A])
    assert values == {A: SecretValue(b"value-a"), B: SecretValue(b"value-b")}


async def test_dev_store_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """No file: the error names it and how to point at another one."""
    missing = tmp_path / "nope.json"
    with pytest.raises(DevStoreError, match="does not exist") as info:
        await DevStoreBackend(missing).resolve([A])
    assert str(missing) in str(info.value)
    assert "GREENTIC_DEV_SECRETS_FILE" in str(info.value)


async def test_dev_store_no_references_does_not_need_the_file(tmp_path: Path) -> None:
    """A worker without references starts without a dev secrets file."""
    assert await DevStoreBackend(tmp_path / "nope.json").resolve([]) == {}


async def test_dev_store_missing_entries_are_all_named(tmp_path: Path) -> None:
    """One missing entry: MissingSecret; several: all named at once."""
    store = write_store(tmp_path / "s.json", {A.logical_path: CANARY})
    with pytest.raises(MissingSecret, match="no key 'prod/acme/default/telegram/bot_token'"):
        await DevStoreBackend(store).resolve([A, B])
    other = SecretRef("prod", "acme", "core", "x", "y")
    with pytest.raises(ResolveFailed) as info:
        await DevStoreBackend(store).resolve([B, other])
    assert B.uri in str(info.value)
    assert other.uri in str(info.value)
    assert CANARY not in str(info.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"prod/acme/core/llm/openai_key": "' + CANARY + '"', r"not valid JSON \(line 1, column"),
        (CANARY, "not valid JSON"),
        ('["' + CANARY + '"]', "must be a JSON object"),
        ('{"prod/acme/core/llm/openai_key": ["' + CANARY + '"]}', "must be a string"),
        ('{"prod/acme/core/llm/openai_key": 42}', "must be a string"),
    ],
)
def test_dev_store_bad_content_never_echoes_it(content: str, needle: str) -> None:
    """Broken files are named with line/column, never with their (secret) content."""
    with pytest.raises(DevStoreError, match=needle) as info:
        parse_dev_store(content, Path("/x/.dev.secrets"))
    assert CANARY not in str(info.value)
    assert "/x/.dev.secrets" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Vault backend wiring.
# ---------------------------------------------------------------------------------------------


def vault_settings(token_file: Path) -> VaultWorkerSettings:
    return VaultWorkerSettings(addr="https://127.0.0.1:1", role="gtc-prod-acme", token_path=token_file)


async def test_vault_backend_resolves_and_closes_its_transport(token_file: Path) -> None:
    """The backend builds one client from the settings, resolves, and closes the session."""
    fake = FakeVault()
    fake.seed(A, "value-a")
    fake.seed(B, "value-b")
    made: list[VaultWorkerSettings] = []

    def factory(settings: VaultWorkerSettings) -> Transport:
        made.append(settings)
        return fake

    backend = VaultBackend(vault_settings(token_file), boot_timeout=5, transport_factory=factory)
    values = await backend.resolve([A, B])
    assert values[A] == SecretValue(b"value-a")
    assert made == [vault_settings(token_file)]
    assert fake.closed


async def test_vault_backend_retries_while_vault_is_down(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Unavailable a few times at boot (connection refused, sealed), then up: resolved."""
    caplog.set_level(logging.WARNING)
    fake = FakeVault()
    fake.seed(A, CANARY)
    fake.fail_next = [VaultUnavailable("POST", "auth/kubernetes/login", None, "refused"), 503, 503]
    backend = VaultBackend(
        vault_settings(token_file),
        boot_timeout=5,
        transport_factory=lambda _: fake,
        backoff=Backoff(initial=0.01, cap=0.02),
    )
    assert (await backend.resolve([A]))[A] == SecretValue(CANARY.encode())
    assert caplog.text.count("retrying in") == 3
    assert CANARY not in caplog.text


async def test_vault_backend_gives_up_after_the_boot_timeout(token_file: Path) -> None:
    """Always down: BootTimeout within the (short) boot timeout, transport closed."""
    fake = FakeVault()
    fake.fail_next = [VaultUnavailable("POST", "auth/kubernetes/login", None, "refused")] * 1000
    backend = VaultBackend(
        vault_settings(token_file),
        boot_timeout=0.3,
        transport_factory=lambda _: fake,
        backoff=Backoff(initial=0.02, cap=0.05),
    )
    with pytest.raises(BootTimeout, match=r"Vault still unavailable after 0\.3s"):
        await backend.resolve([A])
    assert fake.closed
    assert 3 <= len(fake.requests) < 100


async def test_vault_backend_does_not_retry_a_refused_login(tmp_path: Path) -> None:
    """A token Vault refuses: one login attempt, Forbidden, no boot loop."""
    path = tmp_path / "token"
    path.write_text("jwt-of-someone-else")
    fake = FakeVault()
    backend = VaultBackend(vault_settings(path), boot_timeout=5, transport_factory=lambda _: fake)
    with pytest.raises(Forbidden):
        await backend.resolve([A])
    assert len(fake.requests) == 1


async def test_vault_backend_never_sends_an_ambient_vault_token(
    token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VAULT_TOKEN in the process env is ignored: every request carries only the login's token."""
    monkeypatch.setenv("VAULT_TOKEN", "root-token-canary")
    fake = FakeVault()
    fake.seed(A, "v")
    fake.tokens["root-token-canary"] = 1e9  # it WOULD work, if it were ever sent
    settings = RuntimeSettings.from_environ(
        {
            **BASE,
            "GREENTIC_SECRETS_BACKEND": "vault",
            "VAULT_ADDR": "https://127.0.0.1:1",
            "VAULT_TOKEN": "root-token-canary",
            "VAULT_K8S_TOKEN_PATH": str(token_file),
        }
    )
    backend = make_backend(settings, transport_factory=lambda _: fake)
    await backend.resolve([A])
    assert fake.requests[0] == ("POST", "auth/kubernetes/login", None)
    assert {token for _, _, token in fake.requests[1:]} == {"hvs.fake-1"}
