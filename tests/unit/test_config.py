"""The configuration contract: the example file loads, defaults apply, every error names its key."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gtc_admission import constants as c
from gtc_admission.config import (
    CAConfigMap,
    Config,
    ConfigError,
    NamespaceBinding,
    load_config,
    parse_config,
)
from tests.unit.conftest import CA_CONFIG_MAP, CA_KEY, CONFIG_DOCUMENT

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "webhook" / "config.yaml"


def test_example_config_loads() -> None:
    """deploy/webhook/config.yaml parses into the documented contract."""
    config = load_config(EXAMPLE)
    assert config.service_account == "gtc-worker"
    assert config.forbidden_secrets == frozenset({"gtc-dev-secrets"})
    assert dict(config.selectors.worker) == {"greentic.ai/component": "worker"}
    assert config.vault_token.expiration_seconds == 600
    assert config.vault_token.directory == "/var/run/secrets/greentic/vault"
    assert config.vault_token.filename == "token"
    prod = config.environments["prod"]
    assert prod.uses_vault and prod.enforcement == "deny"
    assert prod.vault is not None and prod.vault.role_for("prod", "acme", "core") == "gtc-prod-acme-core"
    assert not config.environments["dev"].uses_vault
    assert config.namespaces["acme-prod"] == NamespaceBinding(env="prod", tenant="acme", team="core")


def test_empty_document_gives_the_defaults() -> None:
    """An empty file is the built-in defaults: badge gtc-worker, gtc-dev-secrets forbidden, no bindings."""
    assert parse_config(None) == Config()
    assert parse_config({}).vault_token.path == "/var/run/secrets/greentic/vault/token"


def test_defaults_inside_sections() -> None:
    """Optional keys take their defaults: team, enforcement, role, kvMount/kvPrefix."""
    config = parse_config(
        {
            "environments": {"p": {"secretsPack": c.PACK_VAULT, "vault": {"addr": "https://v:8200"}}},
            "namespaces": {"ns": {"env": "p", "tenant": "t"}},
        }
    )
    env = config.environments["p"]
    assert env.enforcement == "deny"
    assert env.vault is not None
    assert (env.vault.role, env.vault.kv_mount, env.vault.kv_prefix) == (
        "gtc-{env}-{tenant}",
        "secret",
        "greentic",
    )
    assert config.namespaces["ns"].team == c.DEFAULT_TEAM


def test_kv_paths_lose_surrounding_slashes() -> None:
    """kvMount "/kv/" is the mount "kv"."""
    config = parse_config(
        {
            "environments": {
                "p": {
                    "secretsPack": c.PACK_VAULT,
                    "vault": {"addr": "https://v", "kvMount": "/kv/", "kvPrefix": "a/b/"},
                }
            }
        }
    )
    vault = config.environments["p"].vault
    assert vault is not None and (vault.kv_mount, vault.kv_prefix) == ("kv", "a/b")


def test_undefined_environment_and_unknown_pack_are_accepted_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both load (so unknown-secrets-pack can refuse their workers) and are logged at start."""
    with caplog.at_level(logging.WARNING, logger="gtc_admission.config"):
        config = parse_config(
            {
                "environments": {"x": {"secretsPack": "greentic.secrets.other"}},
                "namespaces": {"ns": {"env": "missing", "tenant": "t"}},
            }
        )
    assert not config.environments["x"].pack_is_known
    assert config.namespaces["ns"].env == "missing"
    text = caplog.text
    assert "environments.x.secretsPack" in text and "namespaces.ns.env" in text


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def apply(document: dict[str, Any]) -> None:
        node = document
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def apply(document: dict[str, Any]) -> None:
        node = document
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return apply


ERRORS: list[Any] = [
    pytest.param(_set("forbidenSecrets", []), "forbidenSecrets: unknown key", id="typo-top-level"),
    pytest.param(
        _set("serviceAccount", "default"), "serviceAccount: must not be 'default'", id="badge-default"
    ),
    pytest.param(_set("serviceAccount", "Not_A_Name"), "serviceAccount:", id="badge-not-a-name"),
    pytest.param(_set("serviceAccount", ""), "serviceAccount: must be a non-empty string", id="badge-empty"),
    pytest.param(
        _set("forbiddenSecrets", "gtc-dev-secrets"), "forbiddenSecrets: must be a list", id="forbidden-str"
    ),
    pytest.param(_set("forbiddenSecrets", ["ok", 7]), "forbiddenSecrets[1]", id="forbidden-item"),
    pytest.param(_set("selectors", []), "selectors: must be a mapping", id="selectors-list"),
    pytest.param(_set("selectors.extra", {}), "selectors.extra: unknown key", id="selectors-typo"),
    pytest.param(_set("selectors.worker", {"a": 1}), "selectors.worker.a", id="selector-value"),
    pytest.param(
        _set("selectors.router", {"greentic.ai/component": "worker"}),
        "selectors: worker and router",
        id="same-sel",
    ),
    pytest.param(_set("vaultToken.audiences", "x"), "vaultToken.audiences: unknown key", id="token-typo"),
    pytest.param(
        _set("vaultToken.expirationSeconds", 599), "vaultToken.expirationSeconds: 599", id="expiry-low"
    ),
    pytest.param(
        _set("vaultToken.expirationSeconds", 2**32 + 1), "vaultToken.expirationSeconds:", id="expiry-high"
    ),
    pytest.param(
        _set("vaultToken.expirationSeconds", "600"),
        "vaultToken.expirationSeconds: must be an integer",
        id="expiry-str",
    ),
    pytest.param(
        _set("vaultToken.expirationSeconds", True),
        "vaultToken.expirationSeconds: must be an integer",
        id="expiry-bool",
    ),
    pytest.param(_set("vaultToken.path", "token"), "vaultToken.path", id="path-relative"),
    pytest.param(_set("vaultToken.path", "/token"), "vaultToken.path", id="path-in-root"),
    pytest.param(_set("vaultToken.path", "/a/b/"), "vaultToken.path", id="path-folder"),
    pytest.param(_set("vaultToken.path", "/a/../b/token"), "vaultToken.path", id="path-not-normal"),
    pytest.param(_set("vaultToken.audience", ""), "vaultToken.audience", id="audience-empty"),
    pytest.param(_set("environments", []), "environments: must be a mapping", id="envs-list"),
    pytest.param(
        _set("environments.prod.secretsPack", None), "environments.prod.secretsPack", id="pack-missing"
    ),
    pytest.param(
        _set("environments.prod.enforcement", "block"), "environments.prod.enforcement", id="enforcement"
    ),
    pytest.param(_set("environments.prod.mode", "x"), "environments.prod.mode: unknown key", id="env-typo"),
    pytest.param(_delete("environments.prod.vault"), "environments.prod.vault: required", id="vault-missing"),
    pytest.param(
        _set("environments.prod.vault", "x"), "environments.prod.vault: must be a mapping", id="vault-str"
    ),
    pytest.param(
        _set("environments.prod.vault.addr", "vault:8200"), "environments.prod.vault.addr", id="addr-no-url"
    ),
    pytest.param(_delete("environments.prod.vault.addr"), "environments.prod.vault.addr", id="addr-missing"),
    pytest.param(
        _set("environments.prod.vault.role", "r-{tenent}"), "environments.prod.vault.role", id="role-typo"
    ),
    pytest.param(
        _set("environments.prod.vault.role", "r-{env"), "environments.prod.vault.role", id="role-broken"
    ),
    pytest.param(
        _set("environments.prod.vault.kvMount", "/"), "environments.prod.vault.kvMount", id="mount-slash"
    ),
    pytest.param(
        _set("environments.prod.vault.kvPrefix", ""), "environments.prod.vault.kvPrefix", id="prefix-empty"
    ),
    pytest.param(
        _set("environments.prod.vault.token", "s"),
        "environments.prod.vault.token: unknown key",
        id="vault-typo",
    ),
    pytest.param(_set("namespaces", "acme"), "namespaces: must be a mapping", id="namespaces-str"),
    pytest.param(
        _set("namespaces.Bad_NS", {"env": "prod", "tenant": "a"}), "namespaces.Bad_NS", id="ns-name"
    ),
    pytest.param(
        _set("namespaces.acme-prod.tenant", "ACME"), "namespaces.acme-prod.tenant", id="tenant-name"
    ),
    pytest.param(_set("namespaces.acme-prod.team", "a b"), "namespaces.acme-prod.team", id="team-name"),
    pytest.param(_delete("namespaces.acme-prod.env"), "namespaces.acme-prod.env", id="binding-env-missing"),
    pytest.param(
        _set("namespaces.acme-prod.owner", "x"), "namespaces.acme-prod.owner: unknown key", id="binding-typo"
    ),
]


@pytest.mark.parametrize(("change", "expected"), ERRORS)
def test_config_error_names_the_key(change: Callable[[dict[str, Any]], None], expected: str) -> None:
    """Each broken key is refused with a ConfigError whose message starts at that key."""
    document = copy.deepcopy(CONFIG_DOCUMENT)
    change(document)
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert expected in str(caught.value)


def test_top_level_not_a_mapping() -> None:
    """A YAML list instead of a mapping names the document."""
    with pytest.raises(ConfigError, match="config: must be a mapping"):
        parse_config(["serviceAccount"])


def test_load_config_file_errors(tmp_path: Path) -> None:
    """A missing file and a file that is not YAML are ConfigErrors naming the file."""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("serviceAccount: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


# --- environments.<env>.vault.caConfigMap ---------------------------------------------------------------

CA = "environments.secure.vault.caConfigMap"


def _ca(value: Any) -> CAConfigMap | None:
    document = copy.deepcopy(CONFIG_DOCUMENT)
    document["environments"]["secure"]["vault"]["caConfigMap"] = value
    vault = parse_config(document).environments["secure"].vault
    assert vault is not None
    return vault.ca_config_map


def test_ca_config_map_is_optional_and_off_by_default() -> None:
    """Without the key no CA is configured; prod of the shared config has none."""
    assert CONFIG_DOCUMENT["environments"]["prod"]["vault"].get("caConfigMap") is None
    prod = parse_config(CONFIG_DOCUMENT).environments["prod"].vault
    assert prod is not None and prod.ca_config_map is None
    assert _ca(None) is None  # an explicit null is the same as no key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"name": CA_CONFIG_MAP, "key": CA_KEY}, CAConfigMap(CA_CONFIG_MAP, CA_KEY), id="both"),
        pytest.param(
            {"name": "trust.example.com"}, CAConfigMap("trust.example.com", "ca.crt"), id="default-key"
        ),
        pytest.param("vault-ca", CAConfigMap("vault-ca", "ca.crt"), id="shorthand"),
        pytest.param({"name": "a", "key": "A_b-1.pem"}, CAConfigMap("a", "A_b-1.pem"), id="key-chars"),
        pytest.param({"name": "a", "key": "k" * 253}, CAConfigMap("a", "k" * 253), id="key-longest"),
        pytest.param({"name": "a" * 253}, CAConfigMap("a" * 253, "ca.crt"), id="name-longest"),
    ],
)
def test_ca_config_map_accepted_forms(value: Any, expected: CAConfigMap) -> None:
    """A mapping {name, key} (key defaults to ca.crt), or a plain string as the name."""
    assert _ca(value) == expected


CA_ERRORS: list[Any] = [
    pytest.param(["vault-ca"], f"{CA}: must be a mapping", id="list"),
    pytest.param({}, f"{CA}.name: must be a non-empty string", id="no-name"),
    pytest.param("", f"{CA}.name: must be a non-empty string", id="empty-shorthand"),
    pytest.param({"name": "Vault_CA"}, f"{CA}.name: 'Vault_CA' is not a valid Kubernetes name", id="name"),
    pytest.param({"name": "-ca"}, f"{CA}.name:", id="name-leading-dash"),
    pytest.param({"name": "a" * 254}, f"{CA}.name: longer than 253", id="name-too-long"),
    pytest.param({"name": "ca", "key": ""}, f"{CA}.key: must be a non-empty string", id="key-empty"),
    pytest.param({"name": "ca", "key": 7}, f"{CA}.key: must be a non-empty string", id="key-int"),
    pytest.param({"name": "ca", "key": "a/b"}, f"{CA}.key: 'a/b' is not a valid ConfigMap key", id="slash"),
    pytest.param({"name": "ca", "key": "."}, f"{CA}.key: '.' is not a valid ConfigMap key", id="dot"),
    pytest.param({"name": "ca", "key": ".."}, f"{CA}.key: '..' is not a valid ConfigMap key", id="dotdot"),
    pytest.param({"name": "ca", "key": "k" * 254}, f"{CA}.key:", id="key-too-long"),
    pytest.param({"name": "ca", "keys": "x"}, f"{CA}.keys: unknown key (allowed: key, name)", id="typo"),
    pytest.param({"name": "ca", "optional": True}, f"{CA}.optional: unknown key", id="no-optional"),
]


@pytest.mark.parametrize(("value", "expected"), CA_ERRORS)
def test_ca_config_map_errors_name_the_key(value: Any, expected: str) -> None:
    """Each broken caConfigMap is refused with a message that starts at its key path."""
    with pytest.raises(ConfigError) as caught:
        _ca(value)
    assert expected in str(caught.value)


def test_ca_config_map_needs_an_https_addr() -> None:
    """A CA next to a plain http:// Vault is refused, also when plain http is chosen explicitly."""
    document = copy.deepcopy(CONFIG_DOCUMENT)
    document["environments"]["secure"]["vault"]["addr"] = "http://vault:8200"
    document["environments"]["secure"]["vault"]["insecureHttp"] = True
    with pytest.raises(ConfigError, match=f"{CA}: needs an https:// addr"):
        parse_config(document)


# --- environments.<env>.vault.insecureHttp ---------------------------------------------------------------

VAULT = "environments.prod.vault"


def _vault(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(CONFIG_DOCUMENT)
    document["environments"]["prod"]["vault"].update(changes)
    return document


def test_plain_http_is_refused_unless_chosen_explicitly() -> None:
    """An http:// addr without insecureHttp: true names both keys and says what travels unencrypted."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_vault(addr="http://vault.vault.svc:8200"))
    message = str(caught.value)
    assert message.startswith(f"{VAULT}.addr: 'http://vault.vault.svc:8200' is plain http")
    assert "ServiceAccount token" in message
    assert f"set {VAULT}.insecureHttp: true" in message
    assert f"{VAULT}.caConfigMap" in message
    with pytest.raises(ConfigError, match=f"{VAULT}.addr: .* is plain http"):
        parse_config(_vault(addr="http://vault:8200", insecureHttp=False))


def test_insecure_http_with_an_http_addr_is_accepted_and_off_by_default() -> None:
    """insecureHttp: true goes with http://; without the key it is false."""
    vault = parse_config(_vault(addr="http://vault:8200", insecureHttp=True)).environments["prod"].vault
    assert vault is not None
    assert (vault.addr, vault.insecure_http) == ("http://vault:8200", True)
    default = parse_config(CONFIG_DOCUMENT).environments["prod"].vault
    assert default is not None and default.insecure_http is False


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"insecureHttp": True},
            f"{VAULT}.insecureHttp: true only goes with an http:// addr, not 'https://",
            id="with-https",
        ),
        pytest.param(
            {"addr": "http://v:8200", "insecureHttp": "true"},
            f"{VAULT}.insecureHttp: must be true or false, got 'true'",
            id="string",
        ),
        pytest.param(
            {"addr": "http://v:8200", "insecureHttp": 1},
            f"{VAULT}.insecureHttp: must be true or false",
            id="int",
        ),
        pytest.param({"insecureHTTP": True}, f"{VAULT}.insecureHTTP: unknown key", id="typo"),
    ],
)
def test_insecure_http_errors_name_the_key(changes: dict[str, Any], expected: str) -> None:
    """A string "true", a leftover flag next to https:// and a misspelt key are all refused."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_vault(**changes))
    assert expected in str(caught.value)


def test_token_file_cannot_be_the_ca_file() -> None:
    """The CA is projected as vault-ca.crt next to the token: the token file may not take that name."""
    document = copy.deepcopy(CONFIG_DOCUMENT)
    document["vaultToken"]["path"] = "/var/run/secrets/greentic/vault/vault-ca.crt"
    with pytest.raises(
        ConfigError, match=r"vaultToken\.path: the file name vault-ca\.crt .*environments\.secure"
    ):
        parse_config(document)
    del document["environments"]["secure"]
    del document["namespaces"]["acme-secure"]
    assert parse_config(document).vault_token.filename == "vault-ca.crt"  # no CA anywhere: no clash
