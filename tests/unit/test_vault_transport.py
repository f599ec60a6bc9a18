"""The worker's transport (CurlTransport: libcurl through pycurl) against real servers on 127.0.0.1.

Well-formed answers come from a small aiohttp application served over TLS with the test CA helpers; the
answers no HTTP server library would send (malformed, truncated, a connection closed mid-way) come from a
raw TLS socket server whose bytes each test scripts.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gtc_admission.tls import generate_certificates, write_certificates
from gtc_secrets.curl_transport import CurlTransport, TlsTrust, _Body
from gtc_secrets.vault import (
    MAX_BODY_BYTES,
    TLSConfigError,
    UnexpectedResponse,
    VaultPaths,
    VaultTLSError,
    VaultUnavailable,
    WorkerVault,
    vault_base_url,
)

CANARY = "canary-transport-93a1c4-never-print-me"
PATHS = VaultPaths(k8s_mount="kubernetes", kv_mount="secret", kv_prefix="greentic", transit_mount="transit")
ServerFactory = Callable[..., Awaitable[TestServer]]


# ---------------------------------------------------------------------------------------------
# VAULT_ADDR and request arguments (no I/O).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "tls", "expected"),
    [
        ("https://127.0.0.1:8200", True, "https://127.0.0.1:8200"),
        ("https://vault.svc", True, "https://vault.svc"),
        ("https://[::1]:8200/", True, "https://[::1]:8200"),
        ("https://gw:9443/vault/", True, "https://gw:9443/vault"),
        ("http://vault.vault.svc:8200", False, "http://vault.vault.svc:8200"),
    ],
)
def test_vault_base_url(addr: str, tls: bool, expected: str) -> None:
    """Scheme, host, port and path prefix of VAULT_ADDR; a trailing slash dropped."""
    assert str(vault_base_url(addr, tls=tls)) == expected


@pytest.mark.parametrize(
    ("addr", "tls"),
    [
        ("http://h:1", True),
        ("https://h:1", False),
        ("https://", True),
        ("ftp://h:1", True),
        ("https://u:p@h:1", True),
        ("https://h:1/?q", True),
        ("https://h:1#f", True),
    ],
)
def test_vault_base_url_refuses_the_wrong_scheme_credentials_and_queries(addr: str, tls: bool) -> None:
    """https with a TLS context, http only without one; nothing beyond host, port and a path."""
    with pytest.raises(ValueError):
        vault_base_url(addr, tls=tls)


@pytest.mark.parametrize(
    ("path", "token"),
    [
        ("secret/data/a b", None),
        ("secret/data/a\r\nX-Evil: 1", None),
        ("secret/data/a?x=1", None),
        ("secret/data/%2e%2e", None),
        ("/sys/health", None),
        ("sys/health", "hvs.a\r\nX-Evil: 1"),
        ("sys/health", "hvs a"),
        ("sys/health", ""),
    ],
)
async def test_paths_and_tokens_that_could_change_the_request_are_refused(
    path: str, token: str | None
) -> None:
    """A path outside the Vault grammar or a token that is not one printable word: refused before I/O."""
    client = CurlTransport("https://127.0.0.1:1", TlsTrust.for_ca_file(None))
    try:
        with pytest.raises(ValueError):
            await client.request("GET", path, token=token)
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------
# A Vault stand-in: an aiohttp application over TLS.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    ca_file: Path
    other_ca_file: Path
    named_only: ssl.SSLContext  # a certificate for vault.example only (not 127.0.0.1)
    named_ca_file: Path  # the CA that signed it


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a certificate for 127.0.0.1 (module scope: generating keys is slow), a second CA, and a
    third CA with a certificate for another host name."""
    paths = write_certificates(
        generate_certificates(["localhost"], ["127.0.0.1"]), tmp_path_factory.mktemp("a")
    )
    other = write_certificates(
        generate_certificates(["localhost"], ["127.0.0.1"]), tmp_path_factory.mktemp("b")
    )
    named = write_certificates(generate_certificates(["vault.example"]), tmp_path_factory.mktemp("c"))
    return Tls(
        server=_server_context(paths.cert, paths.key),
        ca_file=paths.ca_cert,
        other_ca_file=other.ca_cert,
        named_only=_server_context(named.cert, named.key),
        named_ca_file=named.ca_cert,
    )


@dataclass
class Seen:
    """What the stand-in received: (method, path, headers, body) per request, and peak concurrency."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    in_flight: int = 0
    peak: int = 0


def vault_app(seen: Seen, *, delay: float = 0.0) -> web.Application:
    """Echoes the path it was asked for as {"data": {"path": ...}}, after ``delay`` seconds."""

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.in_flight += 1
        seen.peak = max(seen.peak, seen.in_flight)
        try:
            body = await request.read()
            seen.requests.append((request.method, request.path, dict(request.headers), body))
            peer = request.transport.get_extra_info("peername") if request.transport else None
            if peer is not None:
                seen.peers.add((str(peer[0]), int(peer[1])))
            if delay:
                await asyncio.sleep(delay)
            response = web.json_response({"data": {"path": request.path}})
            response.set_cookie("session", CANARY)
            return response
        finally:
            seen.in_flight -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def tls_transport(
    server: TestServer, ca_file: Path, *, max_body_bytes: int = MAX_BODY_BYTES
) -> CurlTransport:
    return CurlTransport(
        f"https://127.0.0.1:{server.port}", TlsTrust.for_ca_file(ca_file), max_body_bytes=max_body_bytes
    )


async def test_concurrent_requests_share_a_bounded_pool_and_each_gets_its_own_answer(
    aiohttp_server: ServerFactory, tls: Tls
) -> None:
    """40 requests at once through a pool of 4: each caller gets the answer to its own path, Vault never
    sees more than 4 at a time, over at most 4 connections; the headers Vault expects are sent."""
    seen = Seen()
    server = await aiohttp_server(vault_app(seen, delay=0.01), ssl=tls.server)
    client = CurlTransport(
        f"https://127.0.0.1:{server.port}", TlsTrust.for_ca_file(tls.ca_file), connections=4
    )
    try:
        paths = [f"secret/data/greentic/p{i}" for i in range(40)]
        responses = await asyncio.gather(*(client.request("GET", p, token="hvs.t") for p in paths))
        login = await client.request("POST", "auth/kubernetes/login", payload={"role": "r", "jwt": "j"})
    finally:
        await client.close()
    assert [r.body["data"]["path"] for r in responses] == [f"/v1/{p}" for p in paths]
    assert all(r.status == 200 for r in responses)
    assert 1 < seen.peak <= 4
    assert len(seen.peers) <= 4
    for method, _, headers, _ in seen.requests[:40]:
        assert method == "GET"
        assert headers["X-Vault-Token"] == "hvs.t"
        assert headers["X-Vault-Request"] == "true"
    method, path, headers, body = seen.requests[40]
    assert (method, path, login.status) == ("POST", "/v1/auth/kubernetes/login", 200)
    assert headers["Content-Type"] == "application/json"
    assert "X-Vault-Token" not in headers
    assert body == b'{"role":"r","jwt":"j"}'


async def test_no_cookies_no_compression_and_the_address_path_prefix_is_kept(
    aiohttp_server: ServerFactory, tls: Tls
) -> None:
    """A cookie Vault (or a proxy) sets is never sent back, no compression is asked for, and a
    VAULT_ADDR with a path prefix (Vault behind a gateway) keeps it."""
    seen = Seen()
    server = await aiohttp_server(vault_app(seen), ssl=tls.server)
    client = CurlTransport(f"https://127.0.0.1:{server.port}/vault/", TlsTrust.for_ca_file(tls.ca_file))
    try:
        for _ in range(2):
            assert (await client.request("GET", "sys/health")).body["data"]["path"] == "/vault/v1/sys/health"
    finally:
        await client.close()
    assert [headers.get("Cookie") for _, _, headers, _ in seen.requests] == [None, None]
    assert all("Accept-Encoding" not in headers for _, _, headers, _ in seen.requests)


async def test_plain_http_only_with_an_http_address_and_no_tls_context(aiohttp_server: ServerFactory) -> None:
    """ssl_context=None is the explicit choice of plain http: it talks to an http:// Vault."""
    seen = Seen()
    server = await aiohttp_server(vault_app(seen))
    client = CurlTransport(f"http://127.0.0.1:{server.port}", None)
    try:
        response = await client.request("GET", "sys/health", token="hvs.t")
    finally:
        await client.close()
    assert response.body["data"]["path"] == "/v1/sys/health"
    assert client.http_version == "HTTP/1.1"
    with pytest.raises(ValueError, match="https://"):
        CurlTransport(f"http://127.0.0.1:{server.port}", TlsTrust.for_ca_file(None))


async def test_a_redirect_is_returned_never_followed(
    aiohttp_server: ServerFactory, tls: Tls, tmp_path: Path
) -> None:
    """A 307 (a standby node) comes back as a status: the token never goes to the Location; the worker's
    client treats it as "retry later"."""
    elsewhere = Seen()
    target = await aiohttp_server(vault_app(elsewhere), ssl=tls.server)
    seen = Seen()

    async def redirect(request: web.Request) -> web.Response:
        seen.requests.append((request.method, request.path, dict(request.headers), b""))
        raise web.HTTPTemporaryRedirect(f"https://127.0.0.1:{target.port}{request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    server = await aiohttp_server(app, ssl=tls.server)
    client = tls_transport(server, tls.ca_file)
    try:
        response = await client.request("GET", "secret/data/x", token="hvs.t")
        assert response.status == 307
        (tmp_path / "token").write_text("jwt")
        vault = WorkerVault(client, PATHS, role="r", token_path=tmp_path / "token")
        with pytest.raises(VaultUnavailable, match="307"):
            await vault.login()
    finally:
        await client.close()
    assert len(seen.requests) == 2
    assert elsewhere.requests == []


@pytest.mark.parametrize("which", ["other CA", "other name"])
async def test_an_untrusted_certificate_is_a_tls_error_naming_vault_cacert(
    aiohttp_server: ServerFactory, tls: Tls, which: str
) -> None:
    """A certificate from another CA, or from the right CA for another host name: VaultTLSError (never
    retried), nothing was sent, and the payload is not in the message."""
    seen = Seen()
    if which == "other CA":
        server = await aiohttp_server(vault_app(seen), ssl=tls.server)
        client = tls_transport(server, tls.other_ca_file)
    else:
        server = await aiohttp_server(vault_app(seen), ssl=tls.named_only)
        client = tls_transport(server, tls.named_ca_file)
    try:
        with pytest.raises(VaultTLSError, match="VAULT_CACERT") as caught:
            await client.request("POST", "auth/kubernetes/login", payload={"jwt": CANARY})
    finally:
        await client.close()
    assert CANARY not in str(caught.value)
    assert seen.requests == []


async def test_bodies_over_the_limit_are_refused_unread_and_never_quoted(
    aiohttp_server: ServerFactory, tls: Tls
) -> None:
    """A body over max_body_bytes, announced (Content-Length) or streamed (chunked): UnexpectedResponse
    (a bigger answer will not shrink on retry), the bytes not shown; the next request works."""

    async def big(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("announced"):
            return web.Response(body=(CANARY * 100).encode())
        if request.path.endswith("small"):
            return web.json_response({"data": {"ok": True}})
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):
            await response.write(CANARY.encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", big)
    server = await aiohttp_server(app, ssl=tls.server)
    client = tls_transport(server, tls.ca_file, max_body_bytes=1024)
    try:
        for path in ("sys/announced", "sys/streamed"):
            with pytest.raises(UnexpectedResponse, match="larger than 1024 bytes") as caught:
                await client.request("GET", path)
            assert CANARY not in str(caught.value)
        assert (await client.request("GET", "sys/small")).body == {"data": {"ok": True}}
    finally:
        await client.close()


async def test_a_body_that_is_not_a_json_object_reads_as_empty(
    aiohttp_server: ServerFactory, tls: Tls
) -> None:
    """A proxy's HTML error page or a JSON list: the status, with an empty body."""

    async def not_an_object(request: web.Request) -> web.Response:
        if request.path.endswith("html"):
            return web.Response(status=502, text="<html>", content_type="text/html")
        return web.json_response([1, 2])

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", not_an_object)
    server = await aiohttp_server(app, ssl=tls.server)
    client = tls_transport(server, tls.ca_file)
    try:
        first = await client.request("GET", "sys/html")
        second = await client.request("GET", "sys/list")
    finally:
        await client.close()
    assert (first.status, first.body) == (502, {})
    assert (second.status, second.body) == (200, {})


async def test_proxy_variables_are_ignored(
    aiohttp_server: ServerFactory, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY / ALL_PROXY never divert the token: the request goes straight to VAULT_ADDR."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    seen = Seen()
    server = await aiohttp_server(vault_app(seen), ssl=tls.server)
    client = tls_transport(server, tls.ca_file)
    try:
        assert (await client.request("GET", "sys/health")).status == 200
    finally:
        await client.close()
    assert len(seen.requests) == 1


async def test_nothing_listening_is_unavailable(tls: Tls) -> None:
    """Connection refused (Vault down): VaultUnavailable naming the OS error, so the boot loop retries."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = CurlTransport(f"https://127.0.0.1:{free_port}", TlsTrust.for_ca_file(tls.ca_file))
    try:
        with pytest.raises(VaultUnavailable, match="ConnectionRefusedError"):
            await client.request("GET", "sys/health")
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------
# What no HTTP server library sends: a raw TLS server whose bytes each test scripts.
# ---------------------------------------------------------------------------------------------

# The answer to a request (connection number, request head): bytes to send, or None to close unanswered.
Script = Callable[[int, bytes], Awaitable[bytes | None]]


def ok(payload: bytes, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(payload), extra, payload)


@dataclass
class RawServer:
    script: Script
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.heads.append(head)
                answer = await self.script(number, head)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


@pytest.fixture
async def raw_server(tls: Tls) -> AsyncIterator[Callable[[Script], Awaitable[tuple[RawServer, str]]]]:
    listeners: list[tuple[asyncio.Server, RawServer]] = []

    async def start(script: Script) -> tuple[RawServer, str]:
        raw = RawServer(script)
        listener = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=tls.server)
        listeners.append((listener, raw))
        return raw, f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"

    try:
        yield start
    finally:
        for listener, raw in listeners:
            for writer in raw.writers:
                writer.transport.abort()
            listener.close()
            await listener.wait_closed()
            await asyncio.gather(*raw.handlers, return_exceptions=True)


async def test_a_post_the_connection_closed_before_answering_is_sent_once_more(
    raw_server: Callable[[Script], Awaitable[tuple[RawServer, str]]], tls: Tls
) -> None:
    """Vault closed a kept-alive connection as the next request arrived (idle timeout, restart): the
    request (a POST too: libcurl resends what got no byte of answer on a reused connection) goes once more on
    a fresh connection."""

    async def close_second_on_first_connection(connection: int, head: bytes) -> bytes | None:
        if connection == 1 and len(server.heads) == 2:
            return None
        return ok(b'{"data": {"n": %d}}' % len(server.heads))

    server, addr = await raw_server(close_second_on_first_connection)
    client = CurlTransport(addr, TlsTrust.for_ca_file(tls.ca_file), connections=1)
    try:
        first = await client.request("POST", "transit/decrypt/k", payload={"batch_input": []})
        second = await client.request("POST", "transit/decrypt/k", payload={"batch_input": []})
    finally:
        await client.close()
    assert (first.body["data"]["n"], second.body["data"]["n"]) == (1, 3)
    assert server.connections == 2


async def test_a_server_that_never_answers_times_out_and_the_next_request_works(
    raw_server: Callable[[Script], Awaitable[tuple[RawServer, str]]], tls: Tls
) -> None:
    """No answer within the timeout: VaultUnavailable "timed out"; the next request gets its answer."""
    hang = asyncio.Event()

    async def hang_first(connection: int, head: bytes) -> bytes | None:
        if len(server.heads) == 1:
            await hang.wait()
            return None
        return ok(b'{"data": {}}')

    server, addr = await raw_server(hang_first)
    client = CurlTransport(addr, TlsTrust.for_ca_file(tls.ca_file), connections=1, timeout=0.3)
    try:
        with pytest.raises(VaultUnavailable, match="timed out"):
            await client.request("GET", "secret/data/a")
        response = await client.request("GET", "secret/data/b")
    finally:
        hang.set()
        await client.close()
    assert response.body == {"data": {}}


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + CANARY.encode(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + CANARY.encode(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + CANARY.encode(),
        b"HTTP/1.1 200 OK\r\nX-Big: " + CANARY.encode() * 3000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: " + CANARY.encode() + b"\r\n" * 200 + b"\r\n",
        CANARY.encode() + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
async def test_malformed_responses_are_unavailable_and_never_quoted(
    raw_server: Callable[[Script], Awaitable[tuple[RawServer, str]]], tls: Tls, answer: bytes
) -> None:
    """Bad framing, a truncated body, an oversized head, garbage: VaultUnavailable naming the request,
    the server's bytes not shown (libcurl's own messages can quote them)."""

    async def malformed(connection: int, head: bytes) -> bytes | None:
        await asyncio.sleep(0)
        return answer

    server, addr = await raw_server(malformed)
    client = CurlTransport(addr, TlsTrust.for_ca_file(tls.ca_file), connections=1, timeout=2)
    try:
        with pytest.raises(VaultUnavailable) as caught:
            await client.request("GET", "secret/data/a")
    finally:
        for writer in server.writers:
            writer.transport.abort()
        await client.close()
    assert CANARY not in str(caught.value)
    assert "GET /v1/secret/data/a" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# What the worker trusts: VAULT_CACERT alone, or the system store.
# ---------------------------------------------------------------------------------------------


def test_a_ca_bundle_that_cannot_be_loaded_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """Checked at start-up, before any request: a missing file or one that holds no certificate."""
    garbage = tmp_path / "ca.pem"
    garbage.write_text(CANARY)
    for path in (tmp_path / "missing.pem", garbage):
        with pytest.raises(TLSConfigError, match="VAULT_CACERT") as caught:
            TlsTrust.for_ca_file(path)
        assert str(path) in str(caught.value)
        assert CANARY not in str(caught.value)


def test_without_vault_cacert_and_without_a_system_store_the_error_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = ssl.DefaultVerifyPaths(None, None, "", "", "", "")  # type: ignore[arg-type]
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: nowhere)
    with pytest.raises(TLSConfigError, match="set VAULT_CACERT"):
        TlsTrust.for_ca_file(None)


async def test_without_vault_cacert_the_system_store_is_trusted_and_with_it_only_vault_cacert(
    aiohttp_server: ServerFactory, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system store is found the way Python's OpenSSL finds it (SSL_CERT_FILE here stands for it), not
    at libcurl's build-time path. With VAULT_CACERT set, the system store is not consulted at all: a
    certificate the system trusts but VAULT_CACERT's CA did not sign is refused."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    seen = Seen()
    server = await aiohttp_server(vault_app(seen), ssl=tls.server)
    system = CurlTransport(f"https://127.0.0.1:{server.port}", TlsTrust.for_ca_file(None))
    pinned = CurlTransport(f"https://127.0.0.1:{server.port}", TlsTrust.for_ca_file(tls.other_ca_file))
    try:
        assert (await system.request("GET", "sys/health")).status == 200
        with pytest.raises(VaultTLSError, match="VAULT_CACERT"):
            await pinned.request("GET", "sys/health")
    finally:
        await system.close()
        await pinned.close()
    assert len(seen.requests) == 1


async def test_a_cancelled_request_leaves_the_transport_usable(
    aiohttp_server: ServerFactory, tls: Tls
) -> None:
    """A caller that gives up (the boot's deadline, a shutdown) takes its request off libcurl's list; the
    next request gets its answer and close() returns."""
    seen = Seen()
    server = await aiohttp_server(vault_app(seen, delay=0.5), ssl=tls.server)
    client = tls_transport(server, tls.ca_file)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.request("GET", "secret/data/slow"), 0.05)
        response = await client.request("GET", "secret/data/next")
    finally:
        await client.close()
    assert response.body["data"]["path"] == "/v1/secret/data/next"


def test_a_body_past_the_limit_stops_the_transfer() -> None:
    """The write callback's own bound (libcurl's MAXFILESIZE already stops most oversized answers): the
    chunk that crosses the limit is not kept and libcurl is told to stop."""
    body = _Body(10)
    assert body.write(b"12345") is None
    assert body.write(b"678901") == 0
    assert (body.chunks, body.too_large) == ([b"12345"], True)
