"""Settings of the worker runtime and of the operator commands: frozen, read once from the env in main.

The worker's settings have no field for ``VAULT_TOKEN`` and nothing here reads ``~/.vault-token``: a
worker's only credential is its ServiceAccount token file. Only :class:`AdminSettings` (``put``) reads
``VAULT_TOKEN``.

``VAULT_ADDR`` is https:// unless ``GREENTIC_VAULT_INSECURE_HTTP=true`` makes plain http an explicit choice
(for both the worker and ``put``): whoever reads the traffic then reads the tokens and the data keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from gtc_secrets import constants as c
from gtc_secrets.refs import Scope, check_scope_segment
from gtc_secrets.supervisor import OnChange
from gtc_secrets.vault import vault_base_url

Backend = Literal["vault", "dev-store"]
# Mount points and the KV prefix go into URL paths: a conservative grammar, no "." or ".." segments.
_MOUNT = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
MAX_BOOT_TIMEOUT_SECONDS = 3600.0


class SettingsError(ValueError):
    """An environment variable is missing or invalid; the message names it."""


@dataclass(frozen=True)
class VaultWorkerSettings:
    """How a worker reaches Vault. Everything here is non-secret and injected by the webhook."""

    addr: str
    role: str
    token_path: Path
    k8s_mount: str = c.DEFAULT_K8S_MOUNT
    kv_mount: str = c.DEFAULT_KV_MOUNT
    kv_prefix: str = c.DEFAULT_KV_PREFIX
    transit_mount: str = c.DEFAULT_TRANSIT_MOUNT
    ca_cert: Path | None = None

    @property
    def plain_http(self) -> bool:
        """VAULT_ADDR is http:// (accepted only with GREENTIC_VAULT_INSECURE_HTTP=true)."""
        return is_plain_http(self.addr)


@dataclass(frozen=True)
class RuntimeSettings:
    """The worker runtime's settings (``exec``, ``get``)."""

    backend: Backend
    scope: Scope
    boot_timeout: float = c.DEFAULT_BOOT_TIMEOUT_SECONDS
    dev_secrets_file: Path = Path(c.DEFAULT_DEV_SECRETS_FILE)
    vault: VaultWorkerSettings | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RuntimeSettings:
        """Read and check every setting; raises SettingsError naming the variable."""
        backend = parse_backend(environ.get(c.ENV_SECRETS_BACKEND))
        scope = parse_scope(environ)
        vault = parse_vault_worker(environ, scope) if backend == c.BACKEND_VAULT else None
        return cls(
            backend=backend,
            scope=scope,
            boot_timeout=parse_boot_timeout(environ.get(c.ENV_BOOT_TIMEOUT)),
            dev_secrets_file=Path(_optional(environ, c.ENV_DEV_SECRETS_FILE) or c.DEFAULT_DEV_SECRETS_FILE),
            vault=vault,
        )


@dataclass(frozen=True)
class AdminSettings:
    """The operator's Vault access for ``put``: admin token from VAULT_TOKEN (never used by a worker)."""

    addr: str
    token: str
    ca_cert: Path | None = None
    kv_mount: str = c.DEFAULT_KV_MOUNT
    kv_prefix: str = c.DEFAULT_KV_PREFIX
    transit_mount: str = c.DEFAULT_TRANSIT_MOUNT

    @property
    def plain_http(self) -> bool:
        return is_plain_http(self.addr)

    def __repr__(self) -> str:  # the token is a credential: keep it out of reprs
        return f"AdminSettings(addr={self.addr!r}, token=<redacted>, kv_mount={self.kv_mount!r})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AdminSettings:
        token = _optional(environ, c.ENV_VAULT_TOKEN)
        if token is None:
            raise SettingsError(f"{c.ENV_VAULT_TOKEN} is not set (put needs an operator token)")
        addr, ca_cert = parse_vault_endpoint(environ)
        return cls(
            addr=addr,
            token=token,
            ca_cert=ca_cert,
            kv_mount=_mount(environ, c.ENV_VAULT_KV_MOUNT, c.DEFAULT_KV_MOUNT),
            kv_prefix=_mount(environ, c.ENV_VAULT_KV_PREFIX, c.DEFAULT_KV_PREFIX),
            transit_mount=_mount(environ, c.ENV_VAULT_TRANSIT_MOUNT, c.DEFAULT_TRANSIT_MOUNT),
        )


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value if value else None


def parse_backend(value: str | None) -> Backend:
    if value is None or value == "":
        return c.DEFAULT_BACKEND
    if value not in c.BACKENDS:
        raise SettingsError(
            f"{c.ENV_SECRETS_BACKEND}={value!r} is not a known secrets backend "
            f"(expected one of: {', '.join(c.BACKENDS)}); refusing to start"
        )
    return cast(Backend, value)


def parse_scope(environ: Mapping[str, str]) -> Scope:
    values: dict[str, str] = {}
    for name, default in (
        (c.ENV_GREENTIC_ENV, None),
        (c.ENV_GREENTIC_TENANT, None),
        (c.ENV_GREENTIC_TEAM, c.DEFAULT_TEAM),
        (c.ENV_GREENTIC_SHARED_TEAM, c.DEFAULT_SHARED_TEAM),
    ):
        value = _optional(environ, name) or default
        if value is None:
            raise SettingsError(f"{name} is not set (the worker's scope needs it)")
        try:
            values[name] = check_scope_segment(value, name)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return Scope(
        env=values[c.ENV_GREENTIC_ENV],
        tenant=values[c.ENV_GREENTIC_TENANT],
        team=values[c.ENV_GREENTIC_TEAM],
        shared_team=values[c.ENV_GREENTIC_SHARED_TEAM],
    )


def parse_insecure_http(value: str | None) -> bool:
    """GREENTIC_VAULT_INSECURE_HTTP: exactly ``true`` or ``false`` (unset or empty: false); else refused."""
    if value is None or value in ("", "false"):
        return False
    if value == "true":
        return True
    raise SettingsError(
        f"{c.ENV_VAULT_INSECURE_HTTP}={value!r} must be true or false (exactly); refusing to start"
    )


def is_plain_http(addr: str) -> bool:
    return addr.startswith("http://")


def parse_addr(value: str | None, *, insecure_http: bool = False) -> str:
    """VAULT_ADDR: an https:// URL, or http:// when ``insecure_http`` (GREENTIC_VAULT_INSECURE_HTTP=true)."""
    if not value:
        raise SettingsError(f"{c.ENV_VAULT_ADDR} is not set")
    plain = is_plain_http(value)
    # The worker sends its ServiceAccount token to this address, and Vault answers with data keys.
    if plain and not insecure_http:
        raise SettingsError(
            f"{c.ENV_VAULT_ADDR}={value!r} must be an https:// URL: over plain http the ServiceAccount token "
            f"and the data keys travel unencrypted. Give Vault TLS, or set {c.ENV_VAULT_INSECURE_HTTP}=true "
            "where that is an accepted risk (traffic inside a service mesh's mTLS, a local trial)"
        )
    try:
        vault_base_url(value, tls=not plain)
    except ValueError as exc:
        hint = f" (http:// only with {c.ENV_VAULT_INSECURE_HTTP}=true)" if not insecure_http else ""
        raise SettingsError(f"{c.ENV_VAULT_ADDR}={value!r}: {exc}{hint}") from None
    return value.rstrip("/")


def parse_vault_endpoint(environ: Mapping[str, str]) -> tuple[str, Path | None]:
    """VAULT_ADDR (checked against GREENTIC_VAULT_INSECURE_HTTP), and VAULT_CACERT (refused with http)."""
    addr = parse_addr(
        environ.get(c.ENV_VAULT_ADDR),
        insecure_http=parse_insecure_http(environ.get(c.ENV_VAULT_INSECURE_HTTP)),
    )
    ca = _optional(environ, c.ENV_VAULT_CACERT)
    if ca and is_plain_http(addr):
        # A CA bundle next to a plain-http address means someone expected TLS: refuse rather than guess.
        raise SettingsError(
            f"{c.ENV_VAULT_CACERT} is set but {c.ENV_VAULT_ADDR}={addr!r} is plain http: nothing would be "
            f"verified. Use an https:// address, or unset {c.ENV_VAULT_CACERT}"
        )
    return addr, Path(ca) if ca else None


WORKER_TRAFFIC = "the ServiceAccount token, the Vault token and the unwrapped data keys"
OPERATOR_TRAFFIC = "the operator's VAULT_TOKEN and the new data key"


def plain_http_warning(addr: str, traffic: str = WORKER_TRAFFIC) -> str:
    """What every boot (and ``put``) logs as a WARNING when VAULT_ADDR is plain http: the address only."""
    return (
        f"{c.ENV_VAULT_ADDR} {addr} is plain http ({c.ENV_VAULT_INSECURE_HTTP}=true): "
        f"{traffic} travel unencrypted to it"
    )


def _mount(environ: Mapping[str, str], name: str, default: str) -> str:
    value = (_optional(environ, name) or default).strip("/")
    if not _MOUNT.fullmatch(value):
        raise SettingsError(f"{name}={value!r} must be a path of [A-Za-z0-9_-] segments")
    return value


def parse_boot_timeout(value: str | None) -> float:
    if value is None or value == "":
        return c.DEFAULT_BOOT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise SettingsError(f"{c.ENV_BOOT_TIMEOUT}={value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_BOOT_TIMEOUT_SECONDS:
        raise SettingsError(f"{c.ENV_BOOT_TIMEOUT}={value!r} must be > 0 and <= {MAX_BOOT_TIMEOUT_SECONDS:g}")
    return seconds


# A duration as Vault Agent's configuration writes one (and plain seconds): 30, 90s, 2.5m, 1h.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class WatchSettings:
    """``exec --watch``: how often to check for new versions, and what a change does to the child."""

    interval: float
    on_change: OnChange = c.ON_CHANGE_RESTART
    grace_seconds: float = c.DEFAULT_GRACE_SECONDS


def parse_duration(value: str, what: str) -> float:
    """Seconds from ``30``, ``90s``, ``2.5m`` or ``1h``; ``what`` names the flag or variable in errors."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise SettingsError(
            f"{what}={value!r} is not a duration (seconds, or a number with s, m or h: 30, 90s, 5m, 1h)"
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def parse_watch_interval(value: str, what: str) -> float:
    """The watch interval: a duration of at least MIN_WATCH_INTERVAL_SECONDS."""
    seconds = parse_duration(value, what)
    if seconds < c.MIN_WATCH_INTERVAL_SECONDS:
        raise SettingsError(
            f"{what}={value!r}: the interval must be at least {c.MIN_WATCH_INTERVAL_SECONDS:g}s (every check "
            "is one Vault read per referenced secret, from every worker)"
        )
    return seconds


def parse_vault_worker(environ: Mapping[str, str], scope: Scope) -> VaultWorkerSettings:
    addr, ca_cert = parse_vault_endpoint(environ)
    return VaultWorkerSettings(
        addr=addr,
        role=_optional(environ, c.ENV_VAULT_ROLE) or c.role_name(scope.env, scope.tenant),
        token_path=Path(_optional(environ, c.ENV_VAULT_TOKEN_PATH) or c.DEFAULT_TOKEN_PATH),
        k8s_mount=_mount(environ, c.ENV_VAULT_K8S_MOUNT, c.DEFAULT_K8S_MOUNT),
        kv_mount=_mount(environ, c.ENV_VAULT_KV_MOUNT, c.DEFAULT_KV_MOUNT),
        kv_prefix=_mount(environ, c.ENV_VAULT_KV_PREFIX, c.DEFAULT_KV_PREFIX),
        transit_mount=_mount(environ, c.ENV_VAULT_TRANSIT_MOUNT, c.DEFAULT_TRANSIT_MOUNT),
        ca_cert=ca_cert,
    )
