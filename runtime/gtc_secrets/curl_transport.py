"""The worker's HTTP transport: libcurl (through pycurl), driven by the asyncio event loop, HTTP/2 to Vault.

Why libcurl: a boot is one login, then every KV read at once, then one batch decrypt. Over HTTP/1.1 the
reads queue on a handful of connections, one request per connection at a time (pipelining is what proxies
in front of Vault get wrong, and no kept Python client does it); over HTTP/2 they all travel on one TLS
connection. Vault (and OpenBao) serve HTTP/2 over TLS, negotiated by ALPN. libcurl is the most widely kept
HTTP/2 client there is, and pycurl's own ``AsyncCurlMulti`` runs it from the event loop (libcurl's
multi-socket API: no threads, no polling). aiohttp's client has no HTTP/2, and httpx's pure-Python framing
costs the worker more CPU than it saves; ``bench/RESULTS.md`` has the figures.

A Vault that does not offer HTTP/2 (a proxy in front that only speaks HTTP/1.1, or plain http) gets HTTP/1.1
on up to ``connections`` keep-alive connections.

Everything a general HTTP client might do on its own that could send the ServiceAccount token elsewhere or
make the worker hold more than it needs is switched off here: redirects, proxies from the environment,
cookies, compression, alt-svc and HSTS (libcurl never enables those two unless asked), any protocol but
the one of VAULT_ADDR.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pycurl
from pycurl.async_multi import AsyncCurlMulti

from .vault import (
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    HEADER_VALUE,
    MAX_BODY_BYTES,
    VAULT_PATH,
    Method,
    Response,
    TLSConfigError,
    UnexpectedResponse,
    VaultTLSError,
    VaultUnavailable,
    json_object,
    vault_base_url,
)

# Connections to Vault when it answers in HTTP/1.1 (one request per connection at a time); over HTTP/2 all
# requests share one connection (libcurl opens another only past the server's limit of concurrent streams).
DEFAULT_CONNECTIONS = 6


@dataclass(frozen=True)
class TlsTrust:
    """What the worker trusts for Vault's certificate: one CA bundle file, or the system's trust store."""

    cafile: str | None
    capath: str | None = None

    @classmethod
    def for_ca_file(cls, ca_file: Path | None) -> TlsTrust:
        """``VAULT_CACERT`` alone (checked now, so a bad file fails at start-up naming it), or without it
        the system trust store as Python's OpenSSL finds it (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured).

        libcurl's own default bundle path is where the wheel's build machine keeps it, not this image's.
        """
        if ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise TLSConfigError(
                    f"VAULT_CACERT {ca_file}: cannot load the CA bundle ({type(exc).__name__})"
                ) from None
            return cls(cafile=str(ca_file))
        paths = ssl.get_default_verify_paths()
        if paths.cafile is None and paths.capath is None:
            raise TLSConfigError("no system CA store found: set VAULT_CACERT to the CA bundle of Vault")
        return cls(cafile=paths.cafile, capath=paths.capath)


# --- Errors: libcurl's codes as the worker's exceptions. ---------------------------------------------------
#
# libcurl's error strings can quote what the server sent (a header value, a host name from a certificate):
# messages are built from the code alone.

# libcurl codes pycurl has no name for (curl/curl.h).
CURLE_WEIRD_SERVER_REPLY = 8
CURLE_HTTP2_STREAM = 92
CURLE_TOO_LARGE = 100

_TLS_ERRORS: Mapping[int, str] = {
    pycurl.E_PEER_FAILED_VERIFICATION: "the certificate is not trusted, or not for this host",
    pycurl.E_SSL_CONNECT_ERROR: "the TLS handshake failed",
    pycurl.E_SSL_CACERT_BADFILE: "the CA bundle cannot be used",
    pycurl.E_SSL_CERTPROBLEM: "a problem with a local certificate",
    pycurl.E_SSL_CIPHER: "no usable cipher",
    pycurl.E_SSL_ISSUER_ERROR: "the issuer check failed",
}
_UNAVAILABLE_ERRORS: Mapping[int, str] = {
    pycurl.E_COULDNT_RESOLVE_HOST: "cannot resolve the host name",
    pycurl.E_OPERATION_TIMEDOUT: "timed out",
    pycurl.E_GOT_NOTHING: "connection closed before the response",
    pycurl.E_SEND_ERROR: "sending failed",
    pycurl.E_RECV_ERROR: "receiving failed (connection reset, or a malformed response)",
    pycurl.E_PARTIAL_FILE: "the response ended before its announced length",
    CURLE_WEIRD_SERVER_REPLY: "a malformed response",
    pycurl.E_UNSUPPORTED_PROTOCOL: "a malformed response (not HTTP/1.1 or HTTP/2)",
    pycurl.E_HTTP2: "HTTP/2 framing error",
    CURLE_HTTP2_STREAM: "HTTP/2 stream error",
    CURLE_TOO_LARGE: "a response head too large",
}
# Names of OpenSSL's certificate verification results (X509_V_ERR_*) an operator meets most.
_VERIFY_RESULTS: Mapping[int, str] = {
    9: "certificate not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unable to get the local issuer certificate",
    21: "unable to verify the first certificate",
    62: "host name mismatch",
}


def _tls_detail(code: int, verify_result: int) -> str:
    what = _TLS_ERRORS[code]
    if code == pycurl.E_PEER_FAILED_VERIFICATION and verify_result:
        what = _VERIFY_RESULTS.get(verify_result, f"certificate verification error {verify_result}")
    elif code == pycurl.E_PEER_FAILED_VERIFICATION:
        # OpenSSL accepted the chain; libcurl's own host name check refused it.
        what = "the certificate is not for this host"
    return f"{what}; check VAULT_CACERT"


def _connect_detail(os_errno: int) -> str:
    if not os_errno:
        return "cannot connect"
    # OSError(errno) is the matching subclass (ConnectionRefusedError, ...): the name an operator knows.
    return f"{type(OSError(os_errno, '')).__name__}: {os.strerror(os_errno)}"


class _Body:
    """The response body, refused past ``limit`` bytes (libcurl stops reading when the write fails)."""

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.too_large = False

    def write(self, chunk: bytes) -> int | None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            return 0  # fewer bytes taken than given: libcurl aborts the transfer (CURLE_WRITE_ERROR)
        self.chunks.append(chunk)
        return None


_HTTP_VERSIONS: Mapping[int, str] = {
    pycurl.CURL_HTTP_VERSION_1_0: "HTTP/1.0",
    pycurl.CURL_HTTP_VERSION_1_1: "HTTP/1.1",
    pycurl.CURL_HTTP_VERSION_2_0: "HTTP/2",
}


class CurlTransport:
    """HTTP to one Vault address with libcurl: HTTP/2 when Vault offers it over TLS, else HTTP/1.1 on up to
    ``connections`` keep-alive connections.

    ``trust=None`` is the explicit choice of plain http and needs an ``http://`` address (settings allow it
    only with GREENTIC_VAULT_INSECURE_HTTP=true). Redirects are never followed (a 3xx comes back as a
    status, and the token never goes to its Location), proxy variables are ignored, no cookie is kept,
    response bodies are read up to ``max_body_bytes``, every request ends within ``timeout`` seconds.
    libcurl itself sends a request once more when a kept-alive connection was closed before it got an
    answer (every request the worker makes is safe to repeat: login, reads, decrypt).

    The libcurl multi handle is made on first use, inside the running event loop, and bound to it.
    """

    def __init__(
        self,
        addr: str,
        trust: TlsTrust | None,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        connections: int = DEFAULT_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if connections < 1:
            raise ValueError("a transport needs at least one connection")
        self._base = vault_base_url(addr, tls=trust is not None)
        self._trust = trust
        self._timeout_ms = max(1, round(timeout * 1000))
        self._connections = connections
        self._max_body = max_body_bytes
        self._multi: AsyncCurlMulti | None = None
        self.http_version: str | None = None  # of the last answer: "HTTP/2" or "HTTP/1.1"

    def _client(self) -> AsyncCurlMulti:
        if self._multi is None:
            self._multi = AsyncCurlMulti()
            self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
            self._multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self._connections)
            self._multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self._connections)
        return self._multi

    def _easy(
        self, method: Method, url: str, headers: list[str], body: bytes | None, sink: _Body
    ) -> pycurl.Curl:
        curl = pycurl.Curl()
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTPS if self._trust is not None else pycurl.PROTO_HTTP)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.PROXY, "")  # an empty proxy: HTTPS_PROXY, ALL_PROXY and the like are not read
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.MAXFILESIZE_LARGE, self._max_body)  # refused by Content-Length before reading
        curl.setopt(pycurl.WRITEFUNCTION, sink.write)
        if self._trust is not None:
            curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
            # Wait for the first connection's ALPN answer rather than open more: concurrent requests then
            # share one HTTP/2 connection (and one TLS handshake).
            curl.setopt(pycurl.PIPEWAIT, 1)
            curl.setopt(pycurl.SSLVERSION, pycurl.SSLVERSION_TLSv1_2)
            curl.setopt(pycurl.SSL_VERIFYPEER, 1)
            curl.setopt(pycurl.SSL_VERIFYHOST, 2)
            for option, value in ((pycurl.CAINFO, self._trust.cafile), (pycurl.CAPATH, self._trust.capath)):
                if value is None:
                    curl.unsetopt(option)
                else:
                    curl.setopt(option, value)
        else:
            curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        if method == "POST":
            curl.setopt(pycurl.POSTFIELDSIZE_LARGE, len(body or b""))
            curl.setopt(pycurl.POSTFIELDS, body or b"")
        else:
            curl.setopt(pycurl.HTTPGET, 1)
        # "Expect:" with no value: never wait for a 100 Continue before sending a (small) JSON body.
        curl.setopt(pycurl.HTTPHEADER, [*headers, "Expect:"])
        return curl

    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        if not VAULT_PATH.fullmatch(path) or path.startswith("/"):
            raise ValueError("request path outside the Vault path grammar")
        if token is not None and not HEADER_VALUE.fullmatch(token):
            raise ValueError("the Vault token is not a printable header value")
        url = str(self._base.with_path(f"{self._base.path.rstrip('/')}/v1/{path}", encoded=True))
        headers = ["X-Vault-Request: true"]
        if token is not None:
            headers.append(f"X-Vault-Token: {token}")
        body = orjson.dumps(payload) if payload is not None else None
        if body is not None:
            headers.append("Content-Type: application/json")
        sink = _Body(self._max_body)
        multi = self._client()
        curl = self._easy(method, url, headers, body, sink)
        try:
            try:
                await multi.add_handle(curl)
            except asyncio.CancelledError:
                with contextlib.suppress(RuntimeError):
                    multi.remove_handle(curl)  # still in flight: take it off libcurl's list first
                raise
            except pycurl.error as exc:
                raise self._error(method, path, curl, sink, exc) from None
            status = int(curl.getinfo(pycurl.RESPONSE_CODE))
            self.http_version = _HTTP_VERSIONS.get(int(curl.getinfo(pycurl.INFO_HTTP_VERSION)), "HTTP")
        finally:
            curl.close()
        return Response(status, json_object(b"".join(sink.chunks)))

    def _error(
        self, method: Method, path: str, curl: pycurl.Curl, sink: _Body, exc: pycurl.error
    ) -> Exception:
        code = int(exc.args[0]) if exc.args and isinstance(exc.args[0], int) else -1
        if sink.too_large or code == pycurl.E_FILESIZE_EXCEEDED:
            return UnexpectedResponse(
                method, path, None, f"response body larger than {self._max_body} bytes, refused"
            )
        if code in _TLS_ERRORS:
            verify_result = int(curl.getinfo(pycurl.SSL_VERIFYRESULT))
            return VaultTLSError(method, path, None, _tls_detail(code, verify_result))
        if code == pycurl.E_COULDNT_CONNECT:
            return VaultUnavailable(method, path, None, _connect_detail(int(curl.getinfo(pycurl.OS_ERRNO))))
        return VaultUnavailable(method, path, None, _UNAVAILABLE_ERRORS.get(code, f"curl error {code}"))

    async def close(self) -> None:
        if self._multi is not None:
            await self._multi.aclose()
