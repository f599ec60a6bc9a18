"""The worker's HTTP/1.1 transport (PipelinedTransport) against a scripted TLS server on 127.0.0.1.

The pure parts (request bytes, response head, chunk sizes, VAULT_ADDR) are table tests; the I/O is tested
with a real TLS server whose answers each test scripts: pipelining, connections closed mid-pipeline or
while idle, redirects, an untrusted certificate, a server that never answers, and malformed responses.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gtc_admission.tls import generate_certificates, write_certificates
from gtc_secrets.vault import (
    MAX_BODY_BYTES,
    HTTPProtocolError,
    PipelinedTransport,
    VaultAddress,
    VaultPaths,
    VaultTLSError,
    VaultUnavailable,
    WorkerVault,
    encode_request,
    make_ssl_context,
    parse_chunk_size,
    parse_response_head,
)

CANARY = "canary-transport-93a1c4-never-print-me"
PATHS = VaultPaths(k8s_mount="kubernetes", kv_mount="secret", kv_prefix="greentic", transit_mount="transit")


# ---------------------------------------------------------------------------------------------
# Pure: request bytes, response heads, chunk sizes, VAULT_ADDR.
# ---------------------------------------------------------------------------------------------


def test_request_bytes_carry_host_token_and_json_length() -> None:
    """A POST has Host, X-Vault-Request, the token and Content-Length; a GET has no body headers."""
    raw = encode_request("POST", "/v1/transit/decrypt/k", "127.0.0.1:8200", token="hvs.abc", body=b'{"a":1}')
    assert raw == (
        b"POST /v1/transit/decrypt/k HTTP/1.1\r\nHost: 127.0.0.1:8200\r\nX-Vault-Request: true\r\n"
        b"X-Vault-Token: hvs.abc\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"
        b'{"a":1}'
    )
    assert encode_request("GET", "/v1/secret/data/x", "h:1") == (
        b"GET /v1/secret/data/x HTTP/1.1\r\nHost: h:1\r\nX-Vault-Request: true\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("target", "token"),
    [
        ("/v1/a b", None),
        ("/v1/a\r\nX-Evil: 1", None),
        ("/v1/a?x=1", None),
        ("v1/relative", None),
        ("/v1/a", "hvs.a\r\nX-Evil: 1"),
        ("/v1/a", "hvs a"),
        ("/v1/a", ""),
    ],
)
def test_request_bytes_refuse_anything_that_could_add_a_header_or_request(
    target: str, token: str | None
) -> None:
    """Targets outside the Vault path grammar and tokens that are not one printable word are refused."""
    with pytest.raises(ValueError):
        encode_request("GET", target, "h:1", token=token)


def head(status_line: bytes, *headers: bytes) -> tuple[bytes, list[bytes]]:
    return status_line, [h + b"\r\n" for h in headers]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (head(b"HTTP/1.1 200 OK\r\n", b"Content-Length: 12"), (200, 12, False, True, False)),
        (head(b"HTTP/1.1 200 OK\r\n", b"Transfer-Encoding: chunked"), (200, None, True, True, False)),
        (
            head(b"HTTP/1.1 404 Not Found\r\n", b"content-length:0", b"Connection: close"),
            (404, 0, False, False, False),
        ),
        (head(b"HTTP/1.1 204 No Content\r\n"), (204, None, False, True, False)),
        (head(b"HTTP/1.1 100 Continue\r\n"), (100, None, False, True, False)),
        (head(b"HTTP/1.0 200 OK\r\n", b"Content-Length: 2"), (200, 2, False, False, False)),
        (head(b"HTTP/1.1 200 OK\r\n"), (200, None, False, False, True)),
        (
            head(b"HTTP/1.1 307\r\n", b"Location: https://elsewhere/", b"Content-Length: 0"),
            (307, 0, False, True, False),
        ),
        (
            head(b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5", b"Content-Length: 5"),
            (200, 5, False, True, False),
        ),
    ],
)
def test_response_head(
    lines: tuple[bytes, list[bytes]], expected: tuple[int, int | None, bool, bool, bool]
) -> None:
    """Status, Content-Length, chunked, keep-alive and read-until-close from a response head."""
    parsed = parse_response_head(*lines)
    assert (
        parsed.status,
        parsed.content_length,
        parsed.chunked,
        parsed.keep_alive,
        parsed.until_close,
    ) == expected


@pytest.mark.parametrize(
    "lines",
    [
        head(b"HTTP/2 200\r\n"),
        head(b"HTTP/1.1 20 OK\r\n"),
        head(b"SSH-2.0-OpenSSH\r\n"),
        head(b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        head(b"HTTP/1.1 200 OK\r\n", b"Transfer-Encoding: gzip, chunked"),
        head(b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5", b"Content-Length: 6"),
        head(b"HTTP/1.1 200 OK\r\n", b"Content-Length: -1"),
        head(b"HTTP/1.1 200 OK\r\n", b"Content-Length: 0x10"),
        head(b"HTTP/1.1 200 OK\r\n", f"Content-Length: {MAX_BODY_BYTES + 1}".encode()),
        head(b"HTTP/1.1 200 OK\r\n", b"Content-Length : 5"),
        head(b"HTTP/1.1 200 OK\r\n", b" folded: continuation"),
        head(b"HTTP/1.1 200 OK\r\n", b"no colon"),
    ],
)
def test_malformed_response_heads_are_refused(lines: tuple[bytes, list[bytes]]) -> None:
    """Other versions, garbage, ambiguous or unsupported framing, and bad header lines are refused."""
    with pytest.raises(HTTPProtocolError):
        parse_response_head(*lines)


def test_chunk_sizes() -> None:
    """Hex sizes with optional extensions; anything else is refused."""
    assert parse_chunk_size(b"1a\r\n") == 26
    assert parse_chunk_size(b"0;ext=1\r\n") == 0
    for bad in (b"\r\n", b"g\r\n", b"-1\r\n", b"123456789\r\n", b"1a"):
        with pytest.raises(HTTPProtocolError):
            parse_chunk_size(bad)


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("https://127.0.0.1:8200", VaultAddress("127.0.0.1", 8200, "127.0.0.1:8200", "")),
        ("https://vault.svc", VaultAddress("vault.svc", 443, "vault.svc:443", "")),
        ("https://[::1]:8200/", VaultAddress("::1", 8200, "[::1]:8200", "")),
        ("https://gw:9443/vault/", VaultAddress("gw", 9443, "gw:9443", "/vault")),
    ],
)
def test_vault_address(addr: str, expected: VaultAddress) -> None:
    """Host, port, Host header and path prefix of VAULT_ADDR."""
    assert VaultAddress.parse(addr) == expected


@pytest.mark.parametrize(
    "addr", ["http://h:1", "https://", "https://u:p@h:1", "https://h:1/?q", "https://h:1#f"]
)
def test_vault_address_refuses_plain_http_credentials_and_queries(addr: str) -> None:
    """Only https, and nothing in the URL beyond host, port and a path."""
    with pytest.raises(ValueError):
        VaultAddress.parse(addr)


# ---------------------------------------------------------------------------------------------
# I/O: a scripted TLS server.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    ca_file: Path
    other_ca_file: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a certificate for 127.0.0.1 (module scope: generating keys is slow), and a second CA."""
    paths = write_certificates(
        generate_certificates(["localhost"], ["127.0.0.1"]), tmp_path_factory.mktemp("a")
    )
    other = write_certificates(
        generate_certificates(["localhost"], ["127.0.0.1"]), tmp_path_factory.mktemp("b")
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths.cert, paths.key)
    return Tls(context, paths.ca_cert, other.ca_cert)


@dataclass(frozen=True)
class Request:
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# What the scripted server does with a request: the bytes to answer (written in pieces of
# ``Server.piece`` bytes), or None to close the connection without answering.
Script = Callable[[Request], Awaitable[bytes | None]]


def ok(payload: object, *, chunked: bool = False, extra: str = "") -> bytes:
    body = json.dumps(payload).encode()
    if chunked:
        chunks = b"".join(
            b"%x;x=y\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
        )
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            + extra.encode()
            + b"\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra.encode(), body)


async def echo(request: Request) -> bytes:
    """The path asked for, as {"data": {"path": ...}}; chunked for every other request."""
    return ok({"data": {"path": request.target}}, chunked=request.target.endswith(("1", "3", "5", "7", "9")))


@dataclass
class Server:
    tls: Tls
    script: Script = echo
    piece: int = 0  # write answers in pieces of this many bytes (0: at once)
    hang_up: bool = False  # close the connection after each answer
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    max_batch: int = 0  # most complete requests found in one read: > 1 means they were pipelined
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.append(writer)
        buffer = b""
        try:
            while data := await reader.read(65536):
                buffer += data
                batch: list[Request] = []
                while (end := buffer.find(b"\r\n\r\n")) >= 0:
                    lines = buffer[:end].decode().split("\r\n")
                    method, target, _ = lines[0].split(" ")
                    headers = dict(line.split(": ", 1) for line in lines[1:])
                    length = int(headers.get("Content-Length", "0"))
                    if len(buffer) < end + 4 + length:
                        break
                    body, buffer = buffer[end + 4 : end + 4 + length], buffer[end + 4 + length :]
                    batch.append(Request(number, method, target, headers, body))
                self.max_batch = max(self.max_batch, len(batch))
                for request in batch:
                    self.requests.append(request)
                    answer = await self.script(request)
                    if answer is None:
                        return
                    for start in range(0, len(answer), self.piece or len(answer)):
                        writer.write(answer[start : start + (self.piece or len(answer))])
                        await writer.drain()
                    if self.hang_up:
                        return
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


@pytest.fixture
async def server(tls: Tls) -> AsyncIterator[Server]:
    scripted = Server(tls)
    listener = await asyncio.start_server(scripted.handle, "127.0.0.1", 0, ssl=tls.server)
    scripted.port = listener.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        scripted.drop_connections()
        listener.close()
        await listener.wait_closed()
        await asyncio.gather(*scripted.handlers, return_exceptions=True)


def transport(server: Server, *, connections: int = 4, timeout: float = 10.0) -> PipelinedTransport:
    return PipelinedTransport(
        server.addr, make_ssl_context(server.tls.ca_file), connections=connections, timeout=timeout
    )


async def test_pipelined_requests_share_few_connections_and_each_gets_its_own_answer(server: Server) -> None:
    """40 concurrent requests over 2 connections, answers split into 5-byte pieces (some chunked): each
    caller gets the answer to its own request, and the requests went out pipelined."""
    server.piece = 5
    client = transport(server, connections=2)
    try:
        paths = [f"secret/data/greentic/p{i}" for i in range(40)]
        responses = await asyncio.gather(*(client.request("GET", p, token="hvs.t") for p in paths))
    finally:
        await client.close()
    assert [r.body["data"]["path"] for r in responses] == [f"/v1/{p}" for p in paths]
    assert all(r.status == 200 for r in responses)
    assert server.connections == 2
    assert {r.connection for r in server.requests} == {1, 2}
    assert server.max_batch > 1
    assert all(r.headers["X-Vault-Token"] == "hvs.t" for r in server.requests)


async def test_the_other_connections_open_while_the_first_request_is_in_flight(server: Server) -> None:
    """The first request (the login) opens every connection: the reads after it find them ready."""
    login_answered = asyncio.Event()
    connections_during_login: list[int] = []

    async def slow_login(request: Request) -> bytes:
        if request.target.endswith("login"):
            for _ in range(100):
                if server.connections == 3:
                    break
                await asyncio.sleep(0.01)
            connections_during_login.append(server.connections)
            login_answered.set()
        return await echo(request)

    server.script = slow_login
    client = transport(server, connections=3)
    try:
        await client.request("POST", "auth/kubernetes/login", payload={"role": "r", "jwt": "j"})
        await asyncio.gather(*(client.request("GET", f"secret/data/x{i}") for i in range(9)))
    finally:
        await client.close()
    assert connections_during_login == [3]
    assert server.connections == 3
    assert sorted(r.connection for r in server.requests[1:]) == [1, 1, 1, 2, 2, 2, 3, 3, 3]


async def test_connection_closed_mid_pipeline_the_unanswered_requests_go_again(server: Server) -> None:
    """The server answers the 3rd request with Connection: close and hangs up: every request still gets
    its own answer, the unanswered ones sent once more on a fresh connection."""
    count = 0

    async def close_after_third(request: Request) -> bytes | None:
        nonlocal count
        count += 1
        if count == 3:
            return ok({"data": {"path": request.target}}, extra="Connection: close\r\n")
        if count == 4:
            return None
        return await echo(request)

    server.script = close_after_third
    client = transport(server, connections=1)
    try:
        paths = [f"secret/data/p{i}" for i in range(10)]
        responses = await asyncio.gather(*(client.request("GET", p) for p in paths))
    finally:
        await client.close()
    assert [r.body["data"]["path"] for r in responses] == [f"/v1/{p}" for p in paths]
    assert server.connections == 2


async def test_connection_close_is_honoured_while_the_socket_lingers(server: Server) -> None:
    """After an answer with Connection: close, the next request goes to a new connection even though the
    server has not hung up yet (it would never answer on the old one)."""
    release = asyncio.Event()

    async def close_but_linger(request: Request) -> bytes | None:
        if request.connection == 1 and len(server.requests) > 1:
            await release.wait()
            return None
        return ok({"data": {"n": len(server.requests)}}, extra="Connection: close\r\n")

    server.script = close_but_linger
    client = transport(server, connections=1, timeout=2)
    try:
        first = await client.request("GET", "sys/health")
        second = await client.request("GET", "sys/health")
    finally:
        release.set()
        await client.close()
    assert (first.body["data"]["n"], second.body["data"]["n"]) == (1, 2)
    assert [r.connection for r in server.requests] == [1, 2]


async def test_a_connection_the_server_closed_while_idle_is_replaced(server: Server) -> None:
    """Vault closes idle keep-alive connections (and restarts): the next request opens a new one."""
    client = transport(server, connections=1)
    try:
        assert (await client.request("GET", "sys/health")).status == 200
        server.drop_connections()
        await asyncio.sleep(0.05)
        assert (await client.request("GET", "sys/health")).status == 200
    finally:
        await client.close()
    assert server.connections == 2


async def test_a_redirect_is_returned_never_followed(server: Server, tls: Tls, tmp_path: Path) -> None:
    """A 307 (a standby node) comes back as a status: the token never goes to the Location; the worker's
    client treats it as "retry later"."""
    elsewhere = Server(tls)
    listener = await asyncio.start_server(elsewhere.handle, "127.0.0.1", 0, ssl=tls.server)
    location = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1/secret/data/x"

    async def redirect(request: Request) -> bytes:
        return (
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    server.script = redirect
    client = transport(server)
    try:
        response = await client.request("GET", "secret/data/x", token="hvs.t")
        assert response.status == 307
        assert response.body == {}
        (tmp_path / "token").write_text("jwt")
        vault = WorkerVault(client, PATHS, role="r", token_path=tmp_path / "token")
        with pytest.raises(VaultUnavailable, match="307"):
            await vault.login()
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()
    assert len(server.requests) == 2
    assert elsewhere.connections == 0


async def test_an_untrusted_certificate_is_a_tls_error_naming_vault_cacert(server: Server) -> None:
    """A server certificate from another CA: VaultTLSError (not retried), and nothing was sent."""
    client = PipelinedTransport(server.addr, make_ssl_context(server.tls.other_ca_file))
    try:
        with pytest.raises(VaultTLSError, match="VAULT_CACERT") as caught:
            await client.request("POST", "auth/kubernetes/login", payload={"jwt": CANARY})
    finally:
        await client.close()
    assert CANARY not in str(caught.value)
    assert server.requests == []


async def test_a_server_that_never_answers_times_out_and_the_connection_is_dropped(server: Server) -> None:
    """No answer within the timeout: VaultUnavailable; the next request uses a fresh connection."""
    hang = asyncio.Event()

    async def hang_first(request: Request) -> bytes:
        if len(server.requests) == 1:
            await hang.wait()
        return await echo(request)

    server.script = hang_first
    client = transport(server, connections=1, timeout=0.3)
    try:
        with pytest.raises(VaultUnavailable, match="timed out"):
            await client.request("GET", "secret/data/a")
        response = await client.request("GET", "secret/data/b")
    finally:
        hang.set()
        await client.close()
    assert response.body["data"]["path"] == "/v1/secret/data/b"
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + CANARY.encode(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + CANARY.encode(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + CANARY.encode(),
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
        CANARY.encode() + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
async def test_malformed_responses_are_unavailable_and_never_quoted(server: Server, answer: bytes) -> None:
    """Bad framing, a truncated body, an oversized head, garbage: VaultUnavailable, the bytes not shown."""

    async def malformed(request: Request) -> bytes | None:
        return answer

    server.script = malformed
    server.hang_up = True
    client = transport(server, connections=1, timeout=5)
    try:
        with pytest.raises(VaultUnavailable) as caught:
            await client.request("GET", "secret/data/a")
    finally:
        server.drop_connections()
        await client.close()
    assert CANARY not in str(caught.value)
    assert "GET /v1/secret/data/a" in str(caught.value)


async def test_a_body_that_is_not_a_json_object_reads_as_empty(server: Server) -> None:
    """A proxy's HTML error page or a JSON list: the status, with an empty body (as before)."""
    answers = [b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 6\r\n\r\n<html>", ok([1, 2])]

    async def not_an_object(request: Request) -> bytes:
        return answers[len(server.requests) - 1]

    server.script = not_an_object
    client = transport(server, connections=1)
    try:
        first = await client.request("GET", "sys/health")
        second = await client.request("GET", "sys/health")
    finally:
        await client.close()
    assert (first.status, first.body) == (502, {})
    assert (second.status, second.body) == (200, {})


async def test_nothing_listening_is_unavailable_and_close_leaves_no_task_behind(tls: Tls) -> None:
    """Connection refused (Vault down): VaultUnavailable; the warm-up openings are all finished by close."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = PipelinedTransport(f"https://127.0.0.1:{free_port}", make_ssl_context(tls.ca_file))
    with pytest.raises(VaultUnavailable, match="ConnectionRefusedError"):
        await client.request("GET", "sys/health")
    await client.close()
    assert openings() == []


def openings() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "PipelinedTransport._open"]  # type: ignore[union-attr]


async def test_close_during_the_warm_up_cancels_it(server: Server) -> None:
    """close() while the connections are still opening: no opening outlives the transport."""
    client = transport(server, connections=4)
    pending = asyncio.create_task(client.request("GET", "sys/health"))
    await asyncio.sleep(0)
    assert len(openings()) == 4
    await client.close()
    assert openings() == []
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_proxy_variables_are_ignored(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY / ALL_PROXY never divert the token: the request goes straight to VAULT_ADDR."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    client = transport(server)
    try:
        assert (await client.request("GET", "sys/health")).status == 200
    finally:
        await client.close()
    assert len(server.requests) == 1
