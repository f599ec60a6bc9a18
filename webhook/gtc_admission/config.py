"""The webhook's configuration: one frozen dataclass, read once at start-up from a YAML file.

Every error names the key it is about (``environments.prod.vault.addr: ...``), so that a broken
ConfigMap stops the server at start with a message an operator can act on. Unknown keys are errors
too: a typo such as ``forbidenSecrets`` must not silently disable a rule.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from gtc_admission import constants as c

log = logging.getLogger(__name__)

Enforcement = Literal["deny", "warn", "dryrun"]
ENFORCEMENTS: tuple[Enforcement, ...] = ("deny", "warn", "dryrun")

# Kubernetes refuses a projected serviceAccountToken with expirationSeconds below 10 minutes.
MIN_TOKEN_EXPIRATION_SECONDS = 600
# ... and one above 2^32 seconds (the API server's validation of projected token volumes).
MAX_TOKEN_EXPIRATION_SECONDS = 1 << 32
ROLE_PLACEHOLDERS = frozenset({"env", "tenant", "team"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# RFC 1123 label (namespace names, tenant/team ids we put into paths and role names).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes ServiceAccount / Secret names: RFC 1123 subdomain.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MAX_SUBDOMAIN_LENGTH = 253
# A ConfigMap data key (the API server's IsConfigMapKey): these characters, at most 253, not "." or "..".
_CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_CONFIG_MAP_KEY_LENGTH = 253


class ConfigError(ValueError):
    """The configuration file is unusable; the message names the offending key."""


@dataclass(frozen=True)
class CAConfigMap:
    """The ConfigMap (in the worker's own namespace) whose ``key`` holds the CA bundle of Vault's certificate.

    ConfigMaps are namespace-local: it must exist in every worker namespace of the environment (e.g.
    distributed by trust-manager). The webhook projects it into the token volume, not optional, so a
    worker whose namespace lacks it never starts (the kubelet holds the pod in ContainerCreating).
    """

    name: str
    key: str = c.DEFAULT_CA_CONFIG_MAP_KEY


@dataclass(frozen=True)
class VaultSettings:
    """Non-secret Vault settings injected into worker pods of one environment."""

    addr: str
    role: str  # template with {env} {tenant} {team}
    kv_mount: str = c.DEFAULT_KV_MOUNT
    kv_prefix: str = c.DEFAULT_KV_PREFIX
    ca_config_map: CAConfigMap | None = None  # None: the worker trusts its image's CA store
    # An http:// addr, chosen explicitly: workers get GREENTIC_VAULT_INSECURE_HTTP=true (pinned).
    insecure_http: bool = False

    def role_for(self, env: str, tenant: str, team: str) -> str:
        return self.role.format(env=env, tenant=tenant, team=team)


@dataclass(frozen=True)
class Environment:
    name: str
    secrets_pack: str
    enforcement: Enforcement = "deny"
    vault: VaultSettings | None = None

    @property
    def uses_vault(self) -> bool:
        return self.secrets_pack == c.PACK_VAULT

    @property
    def pack_is_known(self) -> bool:
        return self.secrets_pack in c.KNOWN_PACKS


@dataclass(frozen=True)
class TokenSettings:
    """The projected ServiceAccount token a worker logs in to Vault with."""

    audience: str = "vault"
    expiration_seconds: int = 600
    path: str = "/var/run/secrets/greentic/vault/token"

    @property
    def directory(self) -> str:
        return str(Path(self.path).parent)

    @property
    def filename(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class NamespaceBinding:
    """What a namespace is bound to: an environment, a tenant and a team."""

    env: str
    tenant: str
    team: str = c.DEFAULT_TEAM


@dataclass(frozen=True)
class Selectors:
    """Pod label selectors (matchLabels semantics) that classify a pod."""

    worker: Mapping[str, str]
    router: Mapping[str, str]


@dataclass(frozen=True)
class Config:
    service_account: str = "gtc-worker"
    forbidden_secrets: frozenset[str] = frozenset({"gtc-dev-secrets"})
    selectors: Selectors = field(
        default_factory=lambda: Selectors(
            worker={"greentic.ai/component": "worker"}, router={"greentic.ai/component": "router"}
        )
    )
    vault_token: TokenSettings = field(default_factory=TokenSettings)
    environments: Mapping[str, Environment] = field(default_factory=dict)
    namespaces: Mapping[str, NamespaceBinding] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Parsing. Small typed readers that carry the key path, so every message names where it failed.
# ---------------------------------------------------------------------------------------------


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{key}: keys must be strings, got {k!r}")
    return cast(Mapping[str, Any], value)


def _only_keys(value: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _string(value: object, key: str, *, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise ConfigError(f"{key}: {value!r} is not a valid Kubernetes name")
    return value


def _string_map(value: object, key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _mapping(value, key).items():
        out[k] = _string(v, f"{key}.{k}")
    return out


def _vault(value: object, key: str) -> VaultSettings:
    raw = _mapping(value, key)
    _only_keys(raw, key, {"addr", "role", "kvMount", "kvPrefix", "caConfigMap", "insecureHttp"})
    addr = _string(raw.get("addr"), f"{key}.addr")
    if not addr.startswith(("https://", "http://")):
        raise ConfigError(f"{key}.addr: must be an http(s) URL")
    insecure_http = raw.get("insecureHttp", False)
    if not isinstance(insecure_http, bool):
        raise ConfigError(f"{key}.insecureHttp: must be true or false, got {insecure_http!r}")
    if addr.startswith("http://") and not insecure_http:
        # Workers send their ServiceAccount token to this address: plain HTTP must be a visible decision.
        raise ConfigError(
            f"{key}.addr: {addr!r} is plain http, which sends every worker's ServiceAccount token and "
            f"Vault token unencrypted; give Vault TLS (https:// and {key}.caConfigMap), or set "
            f"{key}.insecureHttp: true (only inside an mTLS service mesh or for a local trial)"
        )
    if insecure_http and not addr.startswith("http://"):
        # A leftover flag would switch plain HTTP on again unnoticed if the addr ever went back.
        raise ConfigError(f"{key}.insecureHttp: true only goes with an http:// addr, not {addr!r}")
    role = _string(raw.get("role", "gtc-{env}-{tenant}"), f"{key}.role")
    for name in _PLACEHOLDER.findall(role):
        if name not in ROLE_PLACEHOLDERS:
            raise ConfigError(
                f"{key}.role: unknown placeholder {{{name}}} (allowed: {{env}} {{tenant}} {{team}})"
            )
    try:
        role.format(env="e", tenant="t", team="m")
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{key}.role: not a valid template ({exc})") from None
    ca = raw.get("caConfigMap")
    ca_config_map = _ca_config_map(ca, f"{key}.caConfigMap") if ca is not None else None
    if ca_config_map is not None and not addr.startswith("https://"):
        # The runtime refuses plain http anyway; a CA next to it is a half-finished change, say so now.
        raise ConfigError(f"{key}.caConfigMap: needs an https:// addr (a CA only verifies TLS)")
    return VaultSettings(
        addr=addr,
        role=role,
        kv_mount=_kv_path(raw.get("kvMount", c.DEFAULT_KV_MOUNT), f"{key}.kvMount"),
        kv_prefix=_kv_path(raw.get("kvPrefix", c.DEFAULT_KV_PREFIX), f"{key}.kvPrefix"),
        ca_config_map=ca_config_map,
        insecure_http=insecure_http,
    )


def _ca_config_map(value: object, key: str) -> CAConfigMap:
    # A plain string is the ConfigMap's name with the default key: the common case (trust-manager's
    # and cert-manager's "ca.crt") in one word.
    raw = _mapping({"name": value} if isinstance(value, str) else value, key)
    _only_keys(raw, key, {"name", "key"})
    name = _string(raw.get("name"), f"{key}.name", pattern=_DNS_SUBDOMAIN)
    if len(name) > MAX_SUBDOMAIN_LENGTH:
        raise ConfigError(f"{key}.name: longer than {MAX_SUBDOMAIN_LENGTH} characters")
    data_key = _string(raw.get("key", c.DEFAULT_CA_CONFIG_MAP_KEY), f"{key}.key")
    if (
        not _CONFIG_MAP_KEY.match(data_key)
        or data_key in (".", "..")
        or len(data_key) > MAX_CONFIG_MAP_KEY_LENGTH
    ):
        raise ConfigError(
            f"{key}.key: {data_key!r} is not a valid ConfigMap key "
            f"([-._a-zA-Z0-9], at most {MAX_CONFIG_MAP_KEY_LENGTH}, not . or ..)"
        )
    return CAConfigMap(name=name, key=data_key)


def _kv_path(value: object, key: str) -> str:
    # Surrounding slashes are dropped; what remains must not be empty ("/" would mean no mount at all).
    path = _string(value, key).strip("/")
    if not path:
        raise ConfigError(f"{key}: must name a path, not only slashes")
    return path


def _environment(name: str, value: object, key: str) -> Environment:
    raw = _mapping(value, key)
    _only_keys(raw, key, {"secretsPack", "enforcement", "vault"})
    pack = _string(raw.get("secretsPack"), f"{key}.secretsPack")
    enforcement = raw.get("enforcement", "deny")
    if enforcement not in ENFORCEMENTS:
        raise ConfigError(f"{key}.enforcement: must be one of {', '.join(ENFORCEMENTS)}, got {enforcement!r}")
    vault = _vault(raw["vault"], f"{key}.vault") if raw.get("vault") is not None else None
    if pack == c.PACK_VAULT and vault is None:
        raise ConfigError(f"{key}.vault: required when secretsPack is {c.PACK_VAULT}")
    if pack not in c.KNOWN_PACKS:
        # Accepted so that the unknown-secrets-pack rule can refuse its workers (fail closed).
        log.warning(
            "%s.secretsPack: unknown pack %r; worker pods in this environment will be denied", key, pack
        )
    return Environment(name=name, secrets_pack=pack, enforcement=cast(Enforcement, enforcement), vault=vault)


def _token(value: object, key: str) -> TokenSettings:
    raw = _mapping(value, key)
    _only_keys(raw, key, {"audience", "expirationSeconds", "path"})
    defaults = TokenSettings()
    expiration = raw.get("expirationSeconds", defaults.expiration_seconds)
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise ConfigError(f"{key}.expirationSeconds: must be an integer")
    if expiration < MIN_TOKEN_EXPIRATION_SECONDS:
        raise ConfigError(
            f"{key}.expirationSeconds: {expiration} is below the Kubernetes minimum "
            f"of {MIN_TOKEN_EXPIRATION_SECONDS}"
        )
    if expiration > MAX_TOKEN_EXPIRATION_SECONDS:
        raise ConfigError(
            f"{key}.expirationSeconds: {expiration} is above the Kubernetes maximum "
            f"of {MAX_TOKEN_EXPIRATION_SECONDS} (2^32)"
        )
    path = _string(raw.get("path", defaults.path), f"{key}.path")
    # Normalised, so that the folder mounted into every container is exactly the folder the path names.
    if (
        not path.startswith("/")
        or path.endswith("/")
        or posixpath.normpath(path) != path
        or Path(path).parent == Path("/")
    ):
        raise ConfigError(f"{key}.path: must be an absolute file path below a folder, e.g. {defaults.path}")
    return TokenSettings(
        audience=_string(raw.get("audience", defaults.audience), f"{key}.audience"),
        expiration_seconds=expiration,
        path=path,
    )


def _binding(value: object, key: str, environments: Mapping[str, Environment]) -> NamespaceBinding:
    raw = _mapping(value, key)
    _only_keys(raw, key, {"env", "tenant", "team"})
    env = _string(raw.get("env"), f"{key}.env")
    if env not in environments:
        # Accepted so that the unknown-secrets-pack rule can refuse its workers (fail closed).
        log.warning("%s.env: environment %r is not defined; worker pods there will be denied", key, env)
    return NamespaceBinding(
        env=env,
        tenant=_string(raw.get("tenant"), f"{key}.tenant", pattern=_DNS_LABEL),
        team=_string(raw.get("team", c.DEFAULT_TEAM), f"{key}.team", pattern=_DNS_LABEL),
    )


def parse_config(document: object) -> Config:
    """Build a Config from a parsed YAML document; raises ConfigError naming the key."""
    raw = _mapping(document, "config")
    _only_keys(
        raw,
        "",
        {"serviceAccount", "forbiddenSecrets", "selectors", "vaultToken", "environments", "namespaces"},
    )
    defaults = Config()

    service_account = _string(
        raw.get("serviceAccount", defaults.service_account), "serviceAccount", pattern=_DNS_SUBDOMAIN
    )
    if service_account == c.DEFAULT_SERVICE_ACCOUNT:
        raise ConfigError("serviceAccount: must not be 'default' (the worker needs a badge of its own)")

    forbidden_raw = raw.get("forbiddenSecrets", sorted(defaults.forbidden_secrets))
    if not isinstance(forbidden_raw, list):
        raise ConfigError("forbiddenSecrets: must be a list of Secret names")
    forbidden = frozenset(
        _string(v, f"forbiddenSecrets[{i}]", pattern=_DNS_SUBDOMAIN) for i, v in enumerate(forbidden_raw)
    )

    selectors_raw = _mapping(raw.get("selectors"), "selectors")
    _only_keys(selectors_raw, "selectors", {"worker", "router"})
    selectors = Selectors(
        worker=_string_map(selectors_raw.get("worker"), "selectors.worker")
        or dict(defaults.selectors.worker),
        router=_string_map(selectors_raw.get("router"), "selectors.router")
        or dict(defaults.selectors.router),
    )
    if dict(selectors.worker) == dict(selectors.router):
        raise ConfigError("selectors: worker and router selectors must differ")

    environments = {
        name: _environment(name, value, f"environments.{name}")
        for name, value in _mapping(raw.get("environments"), "environments").items()
    }
    namespaces = {
        _string(ns, f"namespaces.{ns}", pattern=_DNS_LABEL): _binding(value, f"namespaces.{ns}", environments)
        for ns, value in _mapping(raw.get("namespaces"), "namespaces").items()
    }
    vault_token = _token(raw.get("vaultToken"), "vaultToken")
    if vault_token.filename == c.VAULT_CA_FILE:
        with_ca = sorted(n for n, e in environments.items() if e.vault and e.vault.ca_config_map)
        if with_ca:
            # The CA is projected next to the token, in the same folder: one file cannot be both.
            raise ConfigError(
                f"vaultToken.path: the file name {c.VAULT_CA_FILE} is where the CA of "
                f"environments.{with_ca[0]}.vault.caConfigMap goes; choose another"
            )
    return Config(
        service_account=service_account,
        forbidden_secrets=forbidden,
        selectors=selectors,
        vault_token=vault_token,
        environments=environments,
        namespaces=namespaces,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(document)
