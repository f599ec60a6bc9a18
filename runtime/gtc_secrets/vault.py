"""A small async Vault client for the worker path: Kubernetes login, KV-v2 read, transit batch decrypt.

Layers, like hvac's adapters: :class:`Transport` is the one seam that does HTTP (``PipelinedTransport``: a
few keep-alive connections, TLS verified against ``VAULT_CACERT``, requests pipelined); :class:`WorkerVault`
builds paths and payloads and keeps the Vault token fresh; :func:`error_for_status` maps HTTP status to
exceptions. Errors carry the method and path (and Vault's own short error text), never request or
response payloads. There is no write or delete path: the worker is read-only.

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
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

log = logging.getLogger(__name__)

Method = Literal["GET", "POST"]
_MAX_DETAIL = 200
# Log in again this long before the Vault token expires: at most a minute, at least a second, and at most
# a fifth of the lease (a short-lived token is refreshed proportionally early).
MAX_REFRESH_MARGIN_SECONDS = 60.0
MIN_REFRESH_MARGIN_SECONDS = 1.0
REFRESH_MARGIN_FRACTION = 0.2
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
# Connections per transport: Vault serves each connection's pipelined requests in order, one goroutine per
# connection, so this is how many requests it works on at once. Each costs one TLS handshake, made while the
# login is in flight. On the 2-core benchmark machine (client and Vault sharing it) 3 was fastest (2 and 4
# about 2 ms slower in 50-reference boots); a bigger Vault elsewhere gains from 3 as much as it needs.
DEFAULT_CONNECTIONS = 3


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


def make_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying TLS context: the given CA bundle, or the system trust store."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"VAULT_CACERT {ca_file}: cannot load the CA bundle ({type(exc).__name__})"
        ) from None


# --- HTTP/1.1, pure: the request bytes and the response head. ---------------------------------------
#
# The worker talks to exactly one server (VAULT_ADDR) in a fixed, small dialect: JSON requests, JSON
# responses, no redirects, no proxies, no cookies, no compression. A general HTTP client costs more CPU per
# request than Vault itself spends on a KV read (aiohttp: about 0.3 ms per request on the benchmark machine)
# and cannot pipeline, so the worker speaks that dialect itself, strictly: anything unexpected in a response
# is a protocol error and the connection is dropped.

_TARGET = re.compile(r"[A-Za-z0-9._~/-]+")
# A Vault token goes into a header: printable ASCII without spaces, so it can never break the request.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?\r\n")
# Bounds on what the server can make the worker hold: a response head, and a body (a batch decrypt of
# thousands of data keys is well under a megabyte).
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
MAX_BODY_BYTES = 16 * 1024 * 1024


class HTTPProtocolError(Exception):
    """The server's bytes are not the HTTP/1.1 this client accepts. The message never quotes them."""


@dataclass(frozen=True)
class VaultAddress:
    """Where VAULT_ADDR points: host and port to connect to, the Host header, and a path prefix."""

    host: str
    port: int
    authority: str
    base_path: str

    @classmethod
    def parse(cls, addr: str) -> VaultAddress:
        parts = urllib.parse.urlsplit(addr)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("VAULT_ADDR must be an https:// URL with a host")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError("VAULT_ADDR must not carry credentials, a query or a fragment")
        port = parts.port or 443
        host = parts.hostname
        authority = f"[{host}]" if ":" in host else host
        return cls(host, port, f"{authority}:{port}", parts.path.rstrip("/"))


def encode_request(
    method: Method, target: str, authority: str, *, token: str | None = None, body: bytes | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 request (pure). Target and token are checked, so no input can add a
    header or a second request."""
    if not _TARGET.fullmatch(target) or not target.startswith("/"):
        raise ValueError("request target outside the Vault path grammar")
    head = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\nX-Vault-Request: true\r\n"
    if token is not None:
        if not _HEADER_VALUE.fullmatch(token):
            raise ValueError("the Vault token is not a printable header value")
        head += f"X-Vault-Token: {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("ascii") + (body or b"")


@dataclass(frozen=True)
class ResponseHead:
    status: int
    # None: no body (1xx/204/304) or a body delimited by the end of the connection (length unknown).
    content_length: int | None
    chunked: bool
    keep_alive: bool
    until_close: bool = False


def parse_response_head(status_line: bytes, header_lines: Sequence[bytes]) -> ResponseHead:
    """Status line and header lines (each ending in CRLF) of a response, checked strictly (pure)."""
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise HTTPProtocolError("malformed status line")
    minor, status = match.group(1), int(match.group(2))
    lengths: set[bytes] = set()
    transfer_encodings: list[bytes] = []
    connection: list[bytes] = []
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name) or not line.endswith(b"\r\n"):
            raise HTTPProtocolError("malformed header line")
        value = value.strip(b" \t\r\n")
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.add(value)
        elif lowered == b"transfer-encoding":
            transfer_encodings.append(value.lower())
        elif lowered == b"connection":
            connection += [token.strip().lower() for token in value.split(b",")]
    keep_alive = minor == b"1" and b"close" not in connection
    if status < 200 or status in (204, 304):
        return ResponseHead(status, None, chunked=False, keep_alive=keep_alive)
    if transfer_encodings:
        # Both framings at once is how responses are smuggled; the server never sends anything but chunked.
        if lengths or transfer_encodings != [b"chunked"]:
            raise HTTPProtocolError("unsupported transfer encoding")
        return ResponseHead(status, None, chunked=True, keep_alive=keep_alive)
    if not lengths:
        return ResponseHead(status, None, chunked=False, keep_alive=False, until_close=True)
    length = next(iter(lengths)) if len(lengths) == 1 else b""  # differing lengths: refused below
    if not length.isdigit() or len(length) > 12 or int(length) > MAX_BODY_BYTES:
        raise HTTPProtocolError("bad or too large Content-Length")
    return ResponseHead(status, int(length), chunked=False, keep_alive=keep_alive)


def parse_chunk_size(line: bytes) -> int:
    """The size of the next chunk from its size line (extensions ignored) (pure)."""
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise HTTPProtocolError("malformed chunk size")
    return int(match.group(1), 16)


def json_object(body: bytes) -> Mapping[str, Any]:
    """The response body as a JSON object; anything else (empty, not JSON, a list) as an empty one."""
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


# --- HTTP/1.1, I/O: a pipelined connection, and the transport over a few of them. -------------------


class _NotAnswered(Exception):
    """The connection ended before any byte of this request's response: safe to send again elsewhere."""


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise HTTPProtocolError("response head line too long") from None


async def _read_response(reader: asyncio.StreamReader) -> tuple[ResponseHead, bytes]:
    """One response (interim 1xx responses skipped) from ``reader``."""
    while True:
        try:
            status_line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise HTTPProtocolError("connection closed inside the status line") from None
            raise _NotAnswered("connection closed before the response") from None
        except (ConnectionResetError, BrokenPipeError):
            raise _NotAnswered("connection reset before the response") from None
        except asyncio.LimitOverrunError:
            raise HTTPProtocolError("response head line too long") from None
        lines: list[bytes] = []
        size = len(status_line)
        while (line := await _read_line(reader)) != b"\r\n":
            lines.append(line)
            size += len(line)
            if len(lines) > MAX_HEADER_LINES or size > MAX_HEAD_BYTES:
                raise HTTPProtocolError("response head too large")
        head = parse_response_head(status_line, lines)
        if head.status >= 200:
            break
    if head.chunked:
        chunks: list[bytes] = []
        total = 0
        while size := parse_chunk_size(await _read_line(reader)):
            total += size
            if total > MAX_BODY_BYTES:
                raise HTTPProtocolError("response body too large")
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise HTTPProtocolError("malformed chunk")
        trailers = 0
        while await _read_line(reader) != b"\r\n":
            trailers += 1
            if trailers > MAX_HEADER_LINES:
                raise HTTPProtocolError("too many trailers")
        return head, b"".join(chunks)
    if head.content_length is not None:
        return head, await reader.readexactly(head.content_length)
    if head.until_close:
        body = await reader.read(MAX_BODY_BYTES + 1)
        while not reader.at_eof() and len(body) <= MAX_BODY_BYTES:
            body += await reader.read(MAX_BODY_BYTES + 1 - len(body))
        if len(body) > MAX_BODY_BYTES:
            raise HTTPProtocolError("response body too large")
        return head, body
    return head, b""


class _Connection:
    """One keep-alive TLS connection with requests pipelined on it.

    HTTP/1.1 answers requests on a connection in the order they were sent, so a request's bytes are queued
    at once (every request queued in the same event-loop step leaves in one TLS write) and its response is
    read when the one before it has been: each exchange waits for its predecessor's turn to end. An
    exchange that fails or is cancelled half-way leaves the stream at an unknown position, so the
    connection is dropped and the exchanges queued behind it fail with _NotAnswered.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._turn: asyncio.Future[None] | None = None
        self._outgoing: list[bytes] = []
        self._closing = False  # the server said Connection: close, or the stream broke

    @property
    def reusable(self) -> bool:
        return not self._closing and not self._reader.at_eof() and not self._writer.is_closing()

    def abort(self) -> None:
        # No TLS close_notify exchange: the worker has nothing more to say, and a graceful close can wait
        # for the peer far longer than the exchange took.
        self._closing = True
        self._writer.transport.abort()

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if not self._closing:
            self._writer.write(data)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if not self.reusable:
            raise _NotAnswered("connection closed")
        previous, mine = self._turn, asyncio.get_running_loop().create_future()
        self._turn = mine
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(request)
        try:
            if previous is not None:
                await asyncio.shield(previous)
            if self._closing:
                raise _NotAnswered("connection closed")
            head, body = await _read_response(self._reader)
            if not head.keep_alive:
                self._closing = True
            return head.status, body
        except BaseException:
            self.abort()
            raise
        finally:
            mine.set_result(None)


@dataclass
class _Slot:
    """A place for one connection: open, being opened, or neither; ``load`` counts exchanges given to it."""

    connection: _Connection | None = None
    opening: asyncio.Task[_Connection] | None = None
    load: int = 0


class _TLSFailed(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class PipelinedTransport:
    """HTTP/1.1 to one Vault address over a few keep-alive TLS connections, requests pipelined on each.

    A booting worker logs in (one request, nothing else can go before it) and then reads every secret at
    once: the other connections are opened while the login is in flight, and each read goes to the
    connection with the fewest outstanding requests, so the reads are shared evenly and each connection
    carries one write of many requests instead of one round trip per request. Every request the worker
    makes is safe to repeat (login, reads, decrypt), so one that a closing connection left unanswered is sent
    once more on a fresh connection. Redirects are never followed: a 3xx is returned like any status.
    """

    def __init__(
        self,
        addr: str,
        ssl_context: ssl.SSLContext,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        if connections < 1:
            raise ValueError("a transport needs at least one connection")
        self._address = VaultAddress.parse(addr)
        self._ssl = ssl_context
        self._timeout = timeout
        self._slots = [_Slot() for _ in range(connections)]

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self._address.host,
                self._address.port,
                ssl=self._ssl,
                server_hostname=self._address.host,
                limit=MAX_HEAD_BYTES,
            )
        except ssl.SSLCertVerificationError as exc:
            raise _TLSFailed(f"{type(exc).__name__}: {exc.verify_message}; check VAULT_CACERT") from None
        except ssl.SSLError as exc:
            raise _TLSFailed(f"{type(exc).__name__}; check VAULT_CACERT") from None
        return _Connection(reader, writer)

    def _start_opening(self, slot: _Slot) -> asyncio.Task[_Connection]:
        task = asyncio.get_running_loop().create_task(self._open())

        def opened(done: asyncio.Task[_Connection]) -> None:
            if slot.opening is done:
                slot.opening = None
            # Retrieving the exception here also keeps a warm-up that nobody waited for from being
            # reported as "never retrieved"; whoever needs the slot next opens it again.
            if not done.cancelled() and done.exception() is None:
                slot.connection = done.result()

        task.add_done_callback(opened)
        slot.opening = task
        return task

    async def _connection(self, slot: _Slot) -> _Connection:
        if slot.connection is not None and slot.connection.reusable:
            return slot.connection
        self._discard(slot)
        task = slot.opening or self._start_opening(slot)
        # Shielded: a request that gives up waiting must not cancel an opening that others wait for.
        return await asyncio.shield(task)

    def _warm_up(self) -> None:
        for slot in self._slots:
            if slot.opening is None and (slot.connection is None or not slot.connection.reusable):
                self._discard(slot)
                self._start_opening(slot)

    @staticmethod
    def _discard(slot: _Slot) -> None:
        if slot.connection is not None:
            slot.connection.abort()
            slot.connection = None

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            slot = min(self._slots, key=lambda s: s.load)  # the first of the least loaded
            slot.load += 1
            try:
                if attempt == 1:
                    self._warm_up()
                return await (await self._connection(slot)).exchange(request)
            except _NotAnswered:
                if attempt == 2:
                    raise
            finally:
                slot.load -= 1
        raise AssertionError("unreachable")

    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        body = orjson.dumps(payload) if payload is not None else None
        target = f"{self._address.base_path}/v1/{path}"
        request = encode_request(method, target, self._address.authority, token=token, body=body)
        try:
            async with asyncio.timeout(self._timeout):
                status, raw = await self._exchange(request)
        except _TLSFailed as exc:
            raise VaultTLSError(method, path, None, exc.detail) from None
        except TimeoutError:
            raise VaultUnavailable(method, path, None, "timed out") from None
        except (_NotAnswered, HTTPProtocolError) as exc:
            raise VaultUnavailable(method, path, None, str(exc)) from None
        except asyncio.IncompleteReadError:
            raise VaultUnavailable(method, path, None, "connection closed inside the response") from None
        except OSError as exc:
            raise VaultUnavailable(method, path, None, f"{type(exc).__name__}: {exc}") from None
        return Response(status, json_object(raw))

    async def close(self) -> None:
        openings = [slot.opening for slot in self._slots if slot.opening is not None]
        for task in openings:
            task.cancel()
        await asyncio.gather(*openings, return_exceptions=True)
        for slot in self._slots:
            self._discard(slot)


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
            or not _HEADER_VALUE.fullmatch(token)
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

    async def read_kv(self, logical_path: str) -> tuple[str, Mapping[str, object]]:
        """GET /v1/{kv}/data/{prefix}/{logical_path}: the latest version's data, and the KV path read."""
        path = self._paths.kv_data(logical_path)
        resp = await self._call("GET", path)
        if resp.status != 200:
            raise error_for_status(resp.status, "GET", path, resp.body)
        data = resp.body.get("data")
        inner = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(inner, Mapping):
            # A deleted or destroyed latest version has data: null.
            raise NotFound("GET", path, resp.status, "the latest version has no data (deleted or destroyed)")
        return path, inner

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
