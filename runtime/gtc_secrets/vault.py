"""A small async Vault client for the worker path: Kubernetes login, KV-v2 read, transit batch decrypt.

Layers, like hvac's adapters: :class:`Transport` is the one seam that does HTTP (the worker's is
``curl_transport.CurlTransport``: libcurl, HTTP/2, TLS verified against ``VAULT_CACERT``);
:class:`WorkerVault` builds paths and payloads and keeps the Vault token fresh; :func:`error_for_status`
maps HTTP status to exceptions. Errors carry the method and path (and Vault's own short error text),
never request or response payloads. There is no write or delete path: the worker is read-only.

The worker never uses ``VAULT_TOKEN`` or ``~/.vault-token``: its only credential is the ServiceAccount
token file, re-read at every login.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeGuard

import orjson
import yarl

log = logging.getLogger(__name__)

Method = Literal["GET", "POST"]
_MAX_DETAIL = 200
# Log in again this long before the Vault token expires: at most a minute, at least a second, and at most
# a fifth of the lease (a short-lived token is refreshed proportionally early).
MAX_REFRESH_MARGIN_SECONDS = 60.0
MIN_REFRESH_MARGIN_SECONDS = 1.0
REFRESH_MARGIN_FRACTION = 0.2
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0


# ---------------------------------------------------------------------------------------------
# Errors: one table from HTTP status to exception.
# ---------------------------------------------------------------------------------------------


class VaultError(Exception):
    """A Vault call failed. Carries method, path and status; never a request or response payload."""

    label = "error"

    def __init__(self, method: str, path: str, status: int | None = None, detail: str = "") -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        where = f"{method} /v1/{path}"
        status_text = f"{status} {self.label}" if status is not None else self.label
        super().__init__(f"{where}: {status_text}" + (f" ({detail})" if detail else ""))


class InvalidRequest(VaultError):
    label = "invalid request"


class Forbidden(VaultError):
    label = "permission denied"


class NotFound(VaultError):
    label = "not found"


class UnexpectedResponse(VaultError):
    label = "unexpected response"


class VaultUnavailable(VaultError):
    """Transient: unreachable, sealed, rate limited, or a server error. The boot loop retries these."""

    label = "unavailable"


class VaultSealed(VaultUnavailable):
    label = "sealed or in maintenance"


class VaultTLSError(VaultError):
    """The TLS handshake or certificate check failed: a configuration problem (VAULT_CACERT), not retried."""

    label = "TLS verification failed"


class TokenFileError(Exception):
    """The ServiceAccount token file cannot be read; the message names the file."""


class TLSConfigError(ValueError):
    """The CA bundle (VAULT_CACERT) cannot be loaded; the message names the file."""


_STATUS_TABLE: dict[int, type[VaultError]] = {
    400: InvalidRequest,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    405: InvalidRequest,
    # A standby node (HA failover, or a node just unsealed that is not active yet) redirects to the
    # active one. Redirects are never followed (the ServiceAccount JWT must go only to VAULT_ADDR), so
    # it is a transient "not serving here yet": retry within the boot timeout.
    307: VaultUnavailable,
    # Vault returns 412 while a performance standby has not caught up yet: retry.
    412: VaultUnavailable,
    429: VaultUnavailable,
    500: VaultUnavailable,
    502: VaultUnavailable,
    503: VaultSealed,
    504: VaultUnavailable,
}


def vault_detail(body: Mapping[str, Any]) -> str:
    """Vault's own error strings (``{"errors": [...]}``), printable ASCII only, shortened.

    Vault's error texts describe the failure ("permission denied", "namespace not authorized"); they do
    not echo request data. They are kept because an operator cannot act on a bare status code.
    """
    errors = body.get("errors")
    if not isinstance(errors, list):
        return ""
    text = "; ".join(str(e) for e in errors if isinstance(e, str) and e)
    text = "".join(ch if 0x20 <= ord(ch) < 0x7F else " " for ch in text).strip()
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def error_for_status(status: int, method: str, path: str, body: Mapping[str, Any]) -> VaultError:
    kind = _STATUS_TABLE.get(status)
    if kind is None:
        kind = VaultUnavailable if status >= 500 else UnexpectedResponse
    return kind(method, path, status, vault_detail(body))


# ---------------------------------------------------------------------------------------------
# Transport: the seam that does HTTP.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: Mapping[str, Any] = field(default_factory=dict)


class Transport(Protocol):
    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        """Send one request to ``/v1/<path>``; raise VaultUnavailable when Vault cannot be reached."""

    async def close(self) -> None: ...


# Paths are built from checked settings and references; this grammar keeps anything else (a space, a
# query, a percent-escape) from reaching a URL, so yarl never has to quote or normalise what we send.
VAULT_PATH = re.compile(r"[A-Za-z0-9._~/-]+")
# A Vault token goes into a header: printable ASCII without spaces, so it can never break the request.
HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
# A batch decrypt of thousands of data keys is well under a megabyte: anything bigger is refused unread.
MAX_BODY_BYTES = 16 * 1024 * 1024


def vault_base_url(addr: str, *, tls: bool) -> yarl.URL:
    """VAULT_ADDR as a base URL: https (``tls``) or http, a host, an optional path prefix, nothing else."""
    url = yarl.URL(addr)
    scheme = "https" if tls else "http"
    if url.scheme != scheme or not url.host:
        raise ValueError(f"VAULT_ADDR must be an {scheme}:// URL with a host")
    if url.user is not None or url.password is not None or url.query_string or url.fragment:
        raise ValueError("VAULT_ADDR must not carry credentials, a query or a fragment")
    return url.with_path(url.path.rstrip("/"))


def json_object(body: bytes) -> Mapping[str, Any]:
    """The response body as a JSON object; anything else (empty, not JSON, a list) as an empty one."""
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


# ---------------------------------------------------------------------------------------------
# The worker's client.
# ---------------------------------------------------------------------------------------------


def refresh_after(lease_seconds: float) -> float:
    """How long a freshly issued token is used before logging in again (pure)."""
    if lease_seconds <= 0:
        return math.inf  # a non-expiring token (never issued by Kubernetes auth roles, but be safe)
    margin = min(
        MAX_REFRESH_MARGIN_SECONDS, max(MIN_REFRESH_MARGIN_SECONDS, lease_seconds * REFRESH_MARGIN_FRACTION)
    )
    return max(0.0, lease_seconds - margin)


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenFileError(f"ServiceAccount token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(
            f"ServiceAccount token file {path} cannot be read ({type(exc).__name__})"
        ) from None
    if not token:
        raise TokenFileError(f"ServiceAccount token file {path} is empty")
    return token


@dataclass(frozen=True, order=True)
class KvVersion:
    """Which version of a KV-v2 secret: its number, and when it was written.

    The number alone is not enough: deleting a secret's metadata and writing it again starts the numbers
    at 1 again, with a new value. ``created_time`` (as Vault gives it, in the data read's metadata and per
    version in the metadata read) tells those apart.
    """

    number: int
    created_time: str = ""

    def __str__(self) -> str:
        return str(self.number)


@dataclass(frozen=True)
class KvRead:
    """One KV-v2 data read: the API path read, the latest version's data, and which version it is."""

    path: str
    data: Mapping[str, object]
    version: KvVersion


def _is_version(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _created_time(metadata: object) -> str:
    created = metadata.get("created_time") if isinstance(metadata, Mapping) else None
    return created if isinstance(created, str) else ""


class TransitItemErrors(Exception):
    """Some items of a batch decrypt failed; ``failed`` maps batch index to Vault's short error text."""

    def __init__(self, method: str, path: str, failed: Mapping[int, str]) -> None:
        self.failed = dict(failed)
        super().__init__(f"{method} /v1/{path}: {len(self.failed)} batch item(s) failed to decrypt")


@dataclass(frozen=True)
class VaultPaths:
    """Where the worker's Vault API calls go (mount points from the settings)."""

    k8s_mount: str
    kv_mount: str
    kv_prefix: str
    transit_mount: str

    def login(self) -> str:
        return f"auth/{self.k8s_mount}/login"

    def kv_data(self, logical_path: str) -> str:
        return f"{self.kv_mount}/data/{self.kv_prefix}/{logical_path}"

    def kv_metadata(self, logical_path: str) -> str:
        return f"{self.kv_mount}/metadata/{self.kv_prefix}/{logical_path}"

    def transit_decrypt(self, key: str) -> str:
        return f"{self.transit_mount}/decrypt/{key}"


class WorkerVault:
    """The worker's read-only Vault access, logged in with the ServiceAccount token file.

    The Vault token is renewed by logging in again (re-reading the token file, which the kubelet rotates)
    shortly before its lease ends, or once after a 403: a 403 right after a fresh login is final.
    """

    def __init__(
        self,
        transport: Transport,
        paths: VaultPaths,
        *,
        role: str,
        token_path: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._paths = paths
        self._role = role
        self._token_path = token_path
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()
        self.logins = 0

    async def close(self) -> None:
        await self._transport.close()

    async def login(self) -> None:
        """POST /v1/auth/{mount}/login with the role and the token file's content."""
        async with self._lock:
            await self._login_locked()

    async def _login_locked(self) -> None:
        jwt = read_token_file(self._token_path)
        path = self._paths.login()
        resp = await self._transport.request("POST", path, payload={"role": self._role, "jwt": jwt})
        if resp.status != 200:
            raise error_for_status(resp.status, "POST", path, resp.body)
        auth = resp.body.get("auth")
        token = auth.get("client_token") if isinstance(auth, Mapping) else None
        lease = auth.get("lease_duration", 0) if isinstance(auth, Mapping) else 0
        if (
            not isinstance(token, str)
            or not HEADER_VALUE.fullmatch(token)
            or isinstance(lease, bool)
            or not isinstance(lease, int | float)
        ):
            raise UnexpectedResponse("POST", path, resp.status, "no client token in the login response")
        self._token = token
        self._refresh_at = self._clock() + refresh_after(float(lease))
        self._generation += 1
        self.logins += 1
        log.info("logged in to Vault as role %s (token lease %ss)", self._role, lease)

    async def _current_token(self) -> tuple[str, int]:
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                await self._login_locked()
            assert self._token is not None
            return self._token, self._generation

    async def _call(self, method: Method, path: str, payload: Mapping[str, Any] | None = None) -> Response:
        token, generation = await self._current_token()
        resp = await self._transport.request(method, path, token=token, payload=payload)
        if resp.status in (401, 403):
            # The token may have expired or been revoked: log in again once (unless a concurrent call
            # already did) and retry. A 403 with a fresh token is a real permission error.
            async with self._lock:
                if self._generation == generation:
                    log.info("Vault answered %s to %s %s; logging in again", resp.status, method, path)
                    await self._login_locked()
                fresh = self._token
            assert fresh is not None
            resp = await self._transport.request(method, path, token=fresh, payload=payload)
        return resp

    async def _get_data(self, path: str) -> Mapping[str, object]:
        """GET /v1/{path}: the ``data`` object of Vault's 200 answer ({} when absent), else its error."""
        resp = await self._call("GET", path)
        if resp.status != 200:
            raise error_for_status(resp.status, "GET", path, resp.body)
        data = resp.body.get("data")
        return data if isinstance(data, Mapping) else {}

    async def read_kv(self, logical_path: str) -> KvRead:
        """GET /v1/{kv}/data/{prefix}/{logical_path}: the latest version's data, its number, and the path."""
        path = self._paths.kv_data(logical_path)
        data = await self._get_data(path)
        inner = data.get("data")
        if not isinstance(inner, Mapping):
            # A deleted or destroyed latest version has data: null.
            raise NotFound("GET", path, 200, "the latest version has no data (deleted or destroyed)")
        metadata = data.get("metadata")
        version = metadata.get("version") if isinstance(metadata, Mapping) else None
        if not _is_version(version):
            # KV-v2 always says which version it returned; `exec --watch` compares it with later checks.
            raise UnexpectedResponse("GET", path, 200, "no version in the KV-v2 metadata")
        return KvRead(path, inner, KvVersion(version, _created_time(metadata)))

    async def read_kv_version(self, logical_path: str) -> KvVersion:
        """GET /v1/{kv}/metadata/{prefix}/{logical_path}: which version is the latest (and readable).

        One small read that carries no envelope: what ``exec --watch`` asks at every check. A latest
        version that is deleted or destroyed is NotFound, as it is for :meth:`read_kv`.
        """
        path = self._paths.kv_metadata(logical_path)
        data = await self._get_data(path)
        current = data.get("current_version")
        if not _is_version(current):
            raise UnexpectedResponse("GET", path, 200, "no current_version in the KV-v2 metadata")
        versions = data.get("versions")
        latest = versions.get(str(current)) if isinstance(versions, Mapping) else None
        if isinstance(latest, Mapping) and (latest.get("deletion_time") or latest.get("destroyed") is True):
            raise NotFound("GET", path, 200, f"the latest version ({current}) is deleted or destroyed")
        return KvVersion(current, _created_time(latest))

    async def decrypt_batch(self, key: str, ciphertexts: Sequence[str]) -> list[bytes]:
        """POST /v1/{transit}/decrypt/{key} with ``batch_input``: ONE call for all wrapped keys."""
        path = self._paths.transit_decrypt(key)
        payload = {"batch_input": [{"ciphertext": text} for text in ciphertexts]}
        resp = await self._call("POST", path, payload)
        data = resp.body.get("data")
        results = data.get("batch_results") if isinstance(data, Mapping) else None
        if resp.status not in (200, 400) or not isinstance(results, list):
            raise error_for_status(resp.status, "POST", path, resp.body)
        if len(results) != len(ciphertexts):
            raise UnexpectedResponse("POST", path, resp.status, "batch result count does not match the input")
        plaintexts: list[bytes] = []
        failed: dict[int, str] = {}
        for index, item in enumerate(results):
            plaintext = item.get("plaintext") if isinstance(item, Mapping) else None
            error = item.get("error") if isinstance(item, Mapping) else None
            if error or not isinstance(plaintext, str):
                failed[index] = (
                    vault_detail({"errors": [error]}) if isinstance(error, str) else "no plaintext"
                )
                plaintexts.append(b"")
                continue
            try:
                plaintexts.append(base64.b64decode(plaintext, validate=True))
            except (binascii.Error, ValueError):
                failed[index] = "plaintext is not base64"
                plaintexts.append(b"")
        if failed:
            raise TransitItemErrors("POST", path, failed)
        return plaintexts
