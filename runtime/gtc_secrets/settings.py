"""Settings of the worker runtime and of the operator commands: frozen, read once from the env in main.

The worker's settings have no field for ``VAULT_TOKEN`` and nothing here reads ``~/.vault-token``: a
worker's only credential is its ServiceAccount token file. Only :class:`AdminSettings` (``put``) reads
``VAULT_TOKEN``.
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

    def __repr__(self) -> str:  # the token is a credential: keep it out of reprs
        return f"AdminSettings(addr={self.addr!r}, token=<redacted>, kv_mount={self.kv_mount!r})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AdminSettings:
        token = _optional(environ, c.ENV_VAULT_TOKEN)
        if token is None:
            raise SettingsError(f"{c.ENV_VAULT_TOKEN} is not set (put needs an operator token)")
        ca = _optional(environ, c.ENV_VAULT_CACERT)
        return cls(
            addr=parse_addr(environ.get(c.ENV_VAULT_ADDR)),
            token=token,
            ca_cert=Path(ca) if ca else None,
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


def parse_addr(value: str | None) -> str:
    if not value:
        raise SettingsError(f"{c.ENV_VAULT_ADDR} is not set")
    # The worker sends its ServiceAccount token to this address: never over plain HTTP.
    if not value.startswith("https://") or len(value) <= len("https://"):
        raise SettingsError(f"{c.ENV_VAULT_ADDR}={value!r} must be an https:// URL")
    return value.rstrip("/")


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


def parse_vault_worker(environ: Mapping[str, str], scope: Scope) -> VaultWorkerSettings:
    ca = _optional(environ, c.ENV_VAULT_CACERT)
    return VaultWorkerSettings(
        addr=parse_addr(environ.get(c.ENV_VAULT_ADDR)),
        role=_optional(environ, c.ENV_VAULT_ROLE) or c.role_name(scope.env, scope.tenant),
        token_path=Path(_optional(environ, c.ENV_VAULT_TOKEN_PATH) or c.DEFAULT_TOKEN_PATH),
        k8s_mount=_mount(environ, c.ENV_VAULT_K8S_MOUNT, c.DEFAULT_K8S_MOUNT),
        kv_mount=_mount(environ, c.ENV_VAULT_KV_MOUNT, c.DEFAULT_KV_MOUNT),
        kv_prefix=_mount(environ, c.ENV_VAULT_KV_PREFIX, c.DEFAULT_KV_PREFIX),
        transit_mount=_mount(environ, c.ENV_VAULT_TRANSIT_MOUNT, c.DEFAULT_TRANSIT_MOUNT),
        ca_cert=Path(ca) if ca else None,
    )
