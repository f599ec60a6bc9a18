"""RuntimeSettings / AdminSettings: read once from a mapping, fail closed, no VAULT_TOKEN for a worker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gtc_secrets.refs import Scope
from gtc_secrets.settings import AdminSettings, RuntimeSettings, SettingsError, VaultWorkerSettings

BASE = {"GREENTIC_ENV": "prod", "GREENTIC_TENANT": "acme", "GREENTIC_TEAM": "core"}
VAULT = {**BASE, "GREENTIC_SECRETS_BACKEND": "vault", "VAULT_ADDR": "https://vault.example:8200"}


def test_unset_backend_is_dev_store_with_defaults() -> None:
    """No GREENTIC_SECRETS_BACKEND: the dev-store, .dev.secrets, 30 s boot timeout, no Vault settings."""
    settings = RuntimeSettings.from_environ(BASE)
    assert settings.backend == "dev-store"
    assert settings.scope == Scope("prod", "acme", "core")
    assert settings.dev_secrets_file == Path(".dev.secrets")
    assert settings.boot_timeout == 30.0
    assert settings.vault is None


def test_empty_backend_is_also_dev_store() -> None:
    """An empty value counts as unset (a blank in a manifest)."""
    assert RuntimeSettings.from_environ({**BASE, "GREENTIC_SECRETS_BACKEND": ""}).backend == "dev-store"


@pytest.mark.parametrize("value", ["Vault", "hashicorp", "dev_store", "file", " vault", "vault "])
def test_unknown_backend_fails_closed_naming_the_value(value: str) -> None:
    """Anything but vault/dev-store is refused, and the message names the value."""
    with pytest.raises(SettingsError) as info:
        RuntimeSettings.from_environ({**BASE, "GREENTIC_SECRETS_BACKEND": value})
    assert repr(value) in str(info.value)
    assert "GREENTIC_SECRETS_BACKEND" in str(info.value)


def test_vault_backend_defaults() -> None:
    """Only VAULT_ADDR is needed; every other setting has the documented default."""
    settings = RuntimeSettings.from_environ(VAULT)
    assert settings.vault == VaultWorkerSettings(
        addr="https://vault.example:8200",
        role="gtc-prod-acme",
        token_path=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        k8s_mount="kubernetes",
        kv_mount="secret",
        kv_prefix="greentic",
        transit_mount="transit",
        ca_cert=None,
    )


def test_vault_backend_reads_every_injected_variable() -> None:
    """Each variable the webhook injects lands in its field; mounts lose surrounding slashes."""
    settings = RuntimeSettings.from_environ(
        {
            **VAULT,
            "VAULT_ADDR": "https://vault.vault.svc:8200/",
            "VAULT_K8S_ROLE": "custom-role",
            "VAULT_K8S_TOKEN_PATH": "/var/run/secrets/greentic/vault/token",
            "VAULT_K8S_MOUNT": "k8s-prod",
            "VAULT_KV_MOUNT": "/kv/",
            "VAULT_KV_PREFIX": "apps/greentic",
            "VAULT_TRANSIT_MOUNT": "transit-prod",
            "VAULT_CACERT": "/etc/vault/ca.pem",
            "GREENTIC_SECRETS_BOOT_TIMEOUT": "2.5",
            "GREENTIC_DEV_SECRETS_FILE": "/ignored/for/vault",
        }
    )
    assert settings.boot_timeout == 2.5
    assert settings.vault is not None
    assert settings.vault.addr == "https://vault.vault.svc:8200"
    assert settings.vault.role == "custom-role"
    assert settings.vault.token_path == Path("/var/run/secrets/greentic/vault/token")
    assert settings.vault.k8s_mount == "k8s-prod"
    assert settings.vault.kv_mount == "kv"
    assert settings.vault.kv_prefix == "apps/greentic"
    assert settings.vault.transit_mount == "transit-prod"
    assert settings.vault.ca_cert == Path("/etc/vault/ca.pem")


def test_worker_settings_never_carry_vault_token() -> None:
    """A worker's only credential is its token file: VAULT_TOKEN is not a field and not read."""
    settings = RuntimeSettings.from_environ({**VAULT, "VAULT_TOKEN": "root-token-canary"})
    assert "root-token-canary" not in repr(settings)
    fields = {f.name for f in dataclasses.fields(RuntimeSettings)} | {
        f.name for f in dataclasses.fields(VaultWorkerSettings)
    }
    assert not any("vault_token" in name or name == "token" for name in fields)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({**VAULT, "VAULT_ADDR": ""}, "VAULT_ADDR is not set"),
        ({k: v for k, v in VAULT.items() if k != "VAULT_ADDR"}, "VAULT_ADDR is not set"),
        ({**VAULT, "VAULT_ADDR": "http://vault:8200"}, "must be an https:// URL"),
        ({**VAULT, "VAULT_ADDR": "https://"}, "must be an https:// URL"),
        ({**VAULT, "VAULT_KV_MOUNT": "../sys"}, "VAULT_KV_MOUNT"),
        ({**VAULT, "VAULT_KV_PREFIX": "a/../b"}, "VAULT_KV_PREFIX"),
        ({**VAULT, "VAULT_TRANSIT_MOUNT": "tran sit"}, "VAULT_TRANSIT_MOUNT"),
        ({**VAULT, "VAULT_K8S_MOUNT": "k8s?x=1"}, "VAULT_K8S_MOUNT"),
        ({**BASE, "GREENTIC_SECRETS_BOOT_TIMEOUT": "soon"}, "not a number"),
        ({**BASE, "GREENTIC_SECRETS_BOOT_TIMEOUT": "0"}, "must be > 0"),
        ({**BASE, "GREENTIC_SECRETS_BOOT_TIMEOUT": "-1"}, "must be > 0"),
        ({**BASE, "GREENTIC_SECRETS_BOOT_TIMEOUT": "nan"}, "must be > 0"),
        ({**BASE, "GREENTIC_SECRETS_BOOT_TIMEOUT": "inf"}, "must be > 0"),
        ({"GREENTIC_TENANT": "acme"}, "GREENTIC_ENV is not set"),
        ({"GREENTIC_ENV": "prod"}, "GREENTIC_TENANT is not set"),
        ({**BASE, "GREENTIC_TENANT": "Acme"}, "GREENTIC_TENANT"),
        ({**BASE, "GREENTIC_TEAM": "../x"}, "GREENTIC_TEAM"),
        ({**BASE, "GREENTIC_ENV": "pr\u043ed"}, "GREENTIC_ENV"),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    """Every refusal names the environment variable it is about."""
    with pytest.raises(SettingsError, match=needle.replace("?", r"\?")):
        RuntimeSettings.from_environ(env)


def test_team_defaults_like_the_webhook_binding() -> None:
    """GREENTIC_TEAM unset means the webhook's default team."""
    assert (
        RuntimeSettings.from_environ({"GREENTIC_ENV": "dev", "GREENTIC_TENANT": "acme"}).scope.team
        == "default"
    )


def test_shared_team_defaults_to_default_and_is_checked() -> None:
    """GREENTIC_SHARED_TEAM: the team every worker of the tenant may read besides its own."""
    scope = RuntimeSettings.from_environ(BASE).scope
    assert scope.shared_team == "default"
    assert (
        RuntimeSettings.from_environ({**BASE, "GREENTIC_SHARED_TEAM": "common"}).scope.shared_team == "common"
    )
    with pytest.raises(SettingsError, match="GREENTIC_SHARED_TEAM"):
        RuntimeSettings.from_environ({**BASE, "GREENTIC_SHARED_TEAM": "../billing"})


def test_settings_are_frozen() -> None:
    """Read once in main, never changed afterwards."""
    settings = RuntimeSettings.from_environ(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.backend = "vault"  # type: ignore[misc]


def test_admin_settings_need_a_token_and_hide_it() -> None:
    """put needs VAULT_TOKEN; its repr never shows it."""
    with pytest.raises(SettingsError, match="VAULT_TOKEN is not set"):
        AdminSettings.from_environ({"VAULT_ADDR": "https://v:8200"})
    admin = AdminSettings.from_environ(
        {"VAULT_ADDR": "https://v:8200", "VAULT_TOKEN": "tok-canary", "VAULT_CACERT": "/ca.pem"}
    )
    assert admin.token == "tok-canary"
    assert admin.ca_cert == Path("/ca.pem")
    assert "tok-canary" not in repr(admin)
    assert (admin.kv_mount, admin.kv_prefix, admin.transit_mount) == ("secret", "greentic", "transit")


# ---------------------------------------------------------------------------------------------
# Plain-http Vault: only by explicit choice (GREENTIC_VAULT_INSECURE_HTTP=true).
# ---------------------------------------------------------------------------------------------

PLAIN = {**VAULT, "VAULT_ADDR": "http://vault.vault.svc:8200"}


@pytest.mark.parametrize("flag", [None, "", "false"])
def test_plain_http_is_refused_without_the_flag_naming_what_to_set(flag: str | None) -> None:
    """http:// without GREENTIC_VAULT_INSECURE_HTTP=true: refused at start, naming the address, the
    variable to set and why (for the worker and for put alike)."""
    env = PLAIN if flag is None else {**PLAIN, "GREENTIC_VAULT_INSECURE_HTTP": flag}
    for read in (RuntimeSettings.from_environ, AdminSettings.from_environ):
        with pytest.raises(SettingsError) as info:
            read({**env, "VAULT_TOKEN": "t"})
        message = str(info.value)
        assert "VAULT_ADDR='http://vault.vault.svc:8200'" in message
        assert "GREENTIC_VAULT_INSECURE_HTTP=true" in message
        assert "unencrypted" in message


def test_plain_http_with_the_flag_is_accepted() -> None:
    """With the flag the worker's and put's settings take the http:// address, marked plain_http."""
    env = {**PLAIN, "GREENTIC_VAULT_INSECURE_HTTP": "true"}
    settings = RuntimeSettings.from_environ(env)
    assert settings.vault is not None
    assert (settings.vault.addr, settings.vault.plain_http, settings.vault.ca_cert) == (
        "http://vault.vault.svc:8200",
        True,
        None,
    )
    admin = AdminSettings.from_environ({**env, "VAULT_TOKEN": "t"})
    assert (admin.addr, admin.plain_http) == ("http://vault.vault.svc:8200", True)


def test_the_flag_does_not_weaken_an_https_address() -> None:
    """GREENTIC_VAULT_INSECURE_HTTP=true with an https:// address: TLS as usual, VAULT_CACERT kept."""
    settings = RuntimeSettings.from_environ(
        {**VAULT, "GREENTIC_VAULT_INSECURE_HTTP": "true", "VAULT_CACERT": "/etc/vault/ca.pem"}
    )
    assert settings.vault is not None
    assert settings.vault.plain_http is False
    assert settings.vault.ca_cert == Path("/etc/vault/ca.pem")


@pytest.mark.parametrize("flag", ["True", "TRUE", "yes", "1", "on", " true", "true ", "fals\u0435"])
def test_any_other_flag_value_fails_closed(flag: str) -> None:
    """Only "true" and "false": anything else is refused, naming the variable and the value, even with
    an https:// address (a typo must not pass unnoticed)."""
    for env in (PLAIN, VAULT):
        with pytest.raises(SettingsError) as info:
            RuntimeSettings.from_environ({**env, "GREENTIC_VAULT_INSECURE_HTTP": flag})
        assert f"GREENTIC_VAULT_INSECURE_HTTP={flag!r} must be true or false" in str(info.value)


def test_a_ca_bundle_with_a_plain_http_address_is_a_config_error() -> None:
    """VAULT_CACERT next to an http:// address means someone expected TLS: refused, naming both."""
    for read in (RuntimeSettings.from_environ, AdminSettings.from_environ):
        with pytest.raises(
            SettingsError, match=r"VAULT_CACERT is set but VAULT_ADDR='http://.*' is plain http"
        ):
            read(
                {
                    **PLAIN,
                    "GREENTIC_VAULT_INSECURE_HTTP": "true",
                    "VAULT_CACERT": "/etc/vault/ca.pem",
                    "VAULT_TOKEN": "t",
                }
            )


@pytest.mark.parametrize(
    "addr",
    ["ftp://vault:8200", "vault:8200", "https://", "http://", "https://u:p@vault:8200", "https://v/?x"],
)
def test_addresses_that_are_not_a_vault_url_are_refused(addr: str) -> None:
    """Other schemes, no host, credentials or a query in VAULT_ADDR: refused at start, flag or not."""
    for flag in ("false", "true"):
        with pytest.raises(SettingsError, match="VAULT_ADDR="):
            RuntimeSettings.from_environ({**VAULT, "VAULT_ADDR": addr, "GREENTIC_VAULT_INSECURE_HTTP": flag})


def test_the_webhook_injects_the_variable_the_runtime_reads() -> None:
    """Both sides name GREENTIC_VAULT_INSECURE_HTTP the same (the runtime does not import the webhook)."""
    from gtc_admission import constants as webhook
    from gtc_secrets import constants as runtime

    assert (
        webhook.ENV_VAULT_INSECURE_HTTP == runtime.ENV_VAULT_INSECURE_HTTP == "GREENTIC_VAULT_INSECURE_HTTP"
    )
