"""The two secrets backends a worker can use, chosen by GREENTIC_SECRETS_BACKEND.

- ``dev-store``: a local JSON file mapping the logical path ``<env>/<tenant>/<team>/<category>/<name>``
  to the value (development only, the old way);
- ``vault``: Kubernetes login, KV-v2 envelopes, transit unwrap (see :mod:`gtc_secrets.resolve`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from gtc_secrets import constants as c
from gtc_secrets.curl_transport import CurlTransport, TlsTrust
from gtc_secrets.envelope import SecretValue
from gtc_secrets.refs import SecretRef
from gtc_secrets.resolve import (
    Backoff,
    MissingSecret,
    ResolveError,
    ResolveFailed,
    resolve_from_vault,
    retry_until,
)
from gtc_secrets.settings import RuntimeSettings, VaultWorkerSettings, plain_http_warning
from gtc_secrets.vault import Transport, VaultPaths, WorkerVault

log = logging.getLogger(__name__)


class SecretsBackend(Protocol):
    name: str

    async def resolve(self, refs: Sequence[SecretRef]) -> dict[SecretRef, SecretValue]:
        """Every reference's value, or an exception naming the failing references."""


class DevStoreError(ResolveError):
    """The dev secrets file is missing or unusable; the message names the file, never its content."""


def parse_dev_store(text: str, path: Path) -> dict[str, SecretValue]:
    """The dev-store file's content (pure). JSON errors report line/column only: the text is secret."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DevStoreError(
            f"dev secrets file {path}: not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(document, Mapping):
        raise DevStoreError(f"dev secrets file {path}: must be a JSON object of logical path -> value")
    store: dict[str, SecretValue] = {}
    for key, value in document.items():
        if not isinstance(value, str):
            raise DevStoreError(f"dev secrets file {path}: the value of {key!r} must be a string")
        store[key] = SecretValue(value.encode("utf-8"))
    return store


class DevStoreBackend:
    name = c.BACKEND_DEV_STORE

    def __init__(self, path: Path) -> None:
        self._path = path

    async def resolve(self, refs: Sequence[SecretRef]) -> dict[SecretRef, SecretValue]:
        if not refs:
            return {}
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DevStoreError(
                f"dev secrets file {self._path} does not exist (set {c.ENV_DEV_SECRETS_FILE}, "
                f"or {c.ENV_SECRETS_BACKEND}={c.BACKEND_VAULT})"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DevStoreError(
                f"dev secrets file {self._path} cannot be read ({type(exc).__name__})"
            ) from None
        store = parse_dev_store(text, self._path)
        values: dict[SecretRef, SecretValue] = {}
        missing: list[Exception] = []
        for ref in sorted(set(refs)):
            value = store.get(ref.logical_path)
            if value is None:
                missing.append(
                    MissingSecret(ref, f"no key {ref.logical_path!r} in dev secrets file {self._path}")
                )
            else:
                values[ref] = value
        if len(missing) == 1:
            raise missing[0]
        if missing:
            raise ResolveFailed(missing)
        log.info("resolved %d secret reference(s) from dev secrets file %s", len(values), self._path)
        return values


TransportFactory = Callable[[VaultWorkerSettings], Transport]


def default_transport(settings: VaultWorkerSettings) -> Transport:
    """libcurl to VAULT_ADDR: HTTP/2 over TLS verified against VAULT_CACERT, or plain http when the
    settings allowed it (GREENTIC_VAULT_INSECURE_HTTP=true), announced at every boot."""
    if settings.plain_http:
        log.warning("%s", plain_http_warning(settings.addr))
        return CurlTransport(settings.addr, None)
    return CurlTransport(settings.addr, TlsTrust.for_ca_file(settings.ca_cert))


class VaultBackend:
    name = c.BACKEND_VAULT

    def __init__(
        self,
        settings: VaultWorkerSettings,
        *,
        boot_timeout: float,
        transport_factory: TransportFactory = default_transport,
        backoff: Backoff | None = None,
    ) -> None:
        self._settings = settings
        self._boot_timeout = boot_timeout
        self._transport_factory = transport_factory
        self._backoff = backoff

    def client(self) -> WorkerVault:
        s = self._settings
        return WorkerVault(
            self._transport_factory(s),
            VaultPaths(
                k8s_mount=s.k8s_mount,
                kv_mount=s.kv_mount,
                kv_prefix=s.kv_prefix,
                transit_mount=s.transit_mount,
            ),
            role=s.role,
            token_path=s.token_path,
        )

    async def resolve(self, refs: Sequence[SecretRef]) -> dict[SecretRef, SecretValue]:
        if not refs:
            return {}
        vault = self.client()
        try:
            return await retry_until(
                lambda: resolve_from_vault(vault, refs),
                timeout=self._boot_timeout,
                what=f"resolving {len(set(refs))} secret reference(s) from {self._settings.addr}",
                backoff=self._backoff,
            )
        finally:
            await vault.close()


def make_backend(
    settings: RuntimeSettings, *, transport_factory: TransportFactory = default_transport
) -> SecretsBackend:
    if settings.backend == c.BACKEND_VAULT:
        assert settings.vault is not None  # RuntimeSettings.from_environ sets it for this backend
        return VaultBackend(
            settings.vault, boot_timeout=settings.boot_timeout, transport_factory=transport_factory
        )
    return DevStoreBackend(settings.dev_secrets_file)
