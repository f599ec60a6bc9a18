"""Reliability of the real ``gtc-admission serve`` over real TLS on 127.0.0.1: load, certificate rotation
under load, graceful shutdown on SIGTERM.

- Load: thousands of reviews over 64 concurrent keep-alive connections; zero errors, every response echoes
  its uid and carries the decision its pod deserves, one audit line per review, no connection dropped.
- Rotation under load: while 16 clients open a new TLS connection for every review, the certificate is
  replaced three times: twice the way the kubelet updates a mounted Secret (an atomic ``..data`` symlink
  swap), once by rewriting the files in place (key first: for a moment the pair does not match). Zero
  failed handshakes, and every connection opened after the server picked up a certificate gets it.
- Shutdown: big reviews (1,000 containers each) in flight on 16 connections when SIGTERM arrives; every
  one of them is answered, new connections are refused while they are still being answered, exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from cryptography import x509

from gtc_admission import constants as c
from gtc_admission.tls import (
    CA_CERT_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    CertificateBundle,
    generate_certificates,
)
from tests.integration.webhook_fixtures import ROOT, WebhookProcess, running_webhook

pytestmark = pytest.mark.integration

EXAMPLE_REVIEW: Final = ROOT / "examples" / "worker-pod-review.json"
RELOAD_SECONDS: Final = 0.1
LOAD_REVIEWS: Final = 3000
LOAD_CONNECTIONS: Final = 64
ROTATION_CLIENTS: Final = 16
ROTATIONS: Final = 3
SHUTDOWN_CONNECTIONS: Final = 16
BIG_POD_CONTAINERS: Final = 1000
REQUEST_TIMEOUT: Final = 60.0


# --------------------------------------------------------------------------------------------
# Reviews, and what each deserves
# --------------------------------------------------------------------------------------------


def _base() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE_REVIEW.read_text())
    return document


BASE_REVIEW: Final = _base()


@dataclass(frozen=True)
class Case:
    """A review to send, and the answer it must get."""

    endpoint: str
    body: bytes
    uid: str
    allowed: bool
    patched: bool


def make_case(index: int, prefix: str) -> Case:
    """Round robin over a worker to patch, a worker on /validate (denied: still on the default
    ServiceAccount), a pod referencing the dev secret (denied), and a worker in a dev-store namespace."""
    uid = f"{prefix}-{index:05d}"
    document = copy.deepcopy(BASE_REVIEW)
    request = document["request"]
    request["uid"] = uid
    kind = index % 4
    endpoint = "/validate" if kind == 1 else "/mutate"
    if kind == 2:
        container = request["object"]["spec"]["containers"][0]
        container["envFrom"] = [{"secretRef": {"name": "gtc-dev-secrets"}}]
    if kind == 3:
        request["namespace"] = request["object"]["metadata"]["namespace"] = "acme-dev"
    return Case(
        endpoint=endpoint,
        body=json.dumps(document).encode(),
        uid=uid,
        allowed=kind in (0, 3),
        patched=kind == 0,
    )


def check_response(case: Case, status: int, body: bytes) -> str | None:
    """None when the answer is the one ``case`` deserves, else what is wrong (collected, not raised:
    one failure must not stop the load)."""
    if status != 200:
        return f"{case.uid}: HTTP {status}: {body[:200]!r}"
    try:
        review = json.loads(body)
        response = review["response"]
        problems = [
            (review["apiVersion"], "admission.k8s.io/v1"),
            (review["kind"], "AdmissionReview"),
            (response["uid"], case.uid),
            (response["allowed"], case.allowed),
            ("patch" in response, case.patched),
        ]
    except (ValueError, KeyError, TypeError) as exc:
        return f"{case.uid}: malformed answer ({type(exc).__name__}): {body[:200]!r}"
    wrong = [f"{got!r} != {want!r}" for got, want in problems if got != want]
    return f"{case.uid}: {', '.join(wrong)}" if wrong else None


def wait_for_audit(webhook: WebhookProcess, uids: set[str], timeout: float = 30.0) -> None:
    """Until every uid has an audit line (stdout is flushed per line, but read from another process)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {record.get("uid") for record in webhook.audit_records()}
        missing = uids - seen
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} reviews without an audit line, e.g. {sorted(missing)[:5]}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Certificates in a folder laid out like a mounted Secret
# --------------------------------------------------------------------------------------------


class SecretVolume:
    """``tls.crt`` / ``tls.key`` / ``ca.crt`` as symlinks through ``..data`` to a timestamped folder, and
    an update the kubelet's way: new folder, new ``..data_tmp`` symlink, renamed over ``..data``
    (atomic), so a reader sees either the whole old pair or the whole new one."""

    def __init__(self, root: Path, bundle: CertificateBundle) -> None:
        self.root = root
        self._generation = 0
        root.mkdir(parents=True, exist_ok=True)
        self.swap(bundle)
        for name in (TLS_CERT_FILE, TLS_KEY_FILE, CA_CERT_FILE):
            (root / name).symlink_to(Path("..data") / name)

    @property
    def cert(self) -> Path:
        return self.root / TLS_CERT_FILE

    @property
    def key(self) -> Path:
        return self.root / TLS_KEY_FILE

    def swap(self, bundle: CertificateBundle) -> None:
        self._generation += 1
        folder = self.root / f"..gen_{self._generation}"
        folder.mkdir(mode=0o700)
        (folder / TLS_CERT_FILE).write_bytes(bundle.cert_pem)
        (folder / TLS_KEY_FILE).write_bytes(bundle.key_pem)
        (folder / CA_CERT_FILE).write_bytes(bundle.ca_cert_pem)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        tmp.replace(self.root / "..data")

    def rewrite_in_place(self, bundle: CertificateBundle) -> None:
        """Not atomic on purpose: the key first, a pause, then the certificate (a careless operator)."""
        self.key.write_bytes(bundle.key_pem)
        time.sleep(3 * RELOAD_SECONDS)  # the server polls meanwhile and sees a pair that does not match
        self.cert.write_bytes(bundle.cert_pem)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def served_serial(port: int) -> int:
    """The serial a new connection is given (no verification: only which certificate matters)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def client_context(*bundles: CertificateBundle) -> ssl.SSLContext:
    """A verifying client context that trusts the CAs of ``bundles`` (and nothing else)."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata="".join(b.ca_cert_pem.decode() for b in bundles))
    return context


@pytest.fixture(scope="module")
def certificates() -> list[CertificateBundle]:
    """The first pair, then one per rotation (generated once: key generation is the slow part)."""
    return [generate_certificates(["localhost"], ["127.0.0.1"]) for _ in range(ROTATIONS + 1)]


@contextlib.contextmanager
def webhook_on(volume: SecretVolume, workdir: Path) -> Iterator[WebhookProcess]:
    with running_webhook(
        workdir,
        tls=(volume.cert, volume.key),
        ca_file=volume.root / CA_CERT_FILE,
        extra_args=["--tls-reload-interval", str(RELOAD_SECONDS)],
    ) as process:
        yield process


# --------------------------------------------------------------------------------------------
# Load: thousands of reviews over 64 concurrent connections
# --------------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    errors: list[str] = field(default_factory=list)
    answered: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    connections_opened: int = 0


async def test_load_thousands_of_reviews_on_64_connections(
    certificates: list[CertificateBundle], tmp_path: Path
) -> None:
    """3,000 reviews on 64 concurrent keep-alive connections: zero errors, each answer echoes its uid and
    has the right decision, exactly 64 connections opened (none dropped), one audit line per review."""
    volume = SecretVolume(tmp_path / "tls", certificates[0])
    cases = [make_case(i, "load") for i in range(LOAD_REVIEWS)]
    stats = LoadStats()

    async def on_connection(*_: object) -> None:
        stats.connections_opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connection)
    queue: asyncio.Queue[Case] = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)

    with webhook_on(volume, tmp_path / "webhook") as webhook:

        async def client(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                case = queue.get_nowait()
                stats.in_flight += 1
                stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                try:
                    async with session.post(
                        webhook.url + case.endpoint,
                        data=case.body,
                        headers={"Content-Type": "application/json"},
                    ) as resp:
                        problem = check_response(case, resp.status, await resp.read())
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = f"{case.uid}: {type(exc).__name__}: {exc}"
                finally:
                    stats.in_flight -= 1
                stats.answered += 1
                if problem:
                    stats.errors.append(problem)

        connector = aiohttp.TCPConnector(limit=LOAD_CONNECTIONS, ssl=client_context(certificates[0]))
        started = time.monotonic()
        async with aiohttp.ClientSession(
            connector=connector,
            trace_configs=[trace],
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            trust_env=False,
        ) as session:
            await asyncio.gather(*(client(session) for _ in range(LOAD_CONNECTIONS)))
        elapsed = time.monotonic() - started

        assert stats.errors == [], stats.errors[:10]
        assert stats.answered == LOAD_REVIEWS
        assert stats.peak_in_flight == LOAD_CONNECTIONS
        assert stats.connections_opened == LOAD_CONNECTIONS
        await asyncio.to_thread(wait_for_audit, webhook, {case.uid for case in cases})
        assert webhook.process.poll() is None
        assert " ERROR " not in webhook.stderr()
    print(f"load: {LOAD_REVIEWS} reviews in {elapsed:.2f}s ({LOAD_REVIEWS / elapsed:.0f}/s)")


# --------------------------------------------------------------------------------------------
# Certificate rotation under load
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    started: float  # time.monotonic() before the connection was opened
    serial: int | None  # the certificate the server presented (None when the connection failed)
    problem: str | None


def review_on_a_new_connection(webhook: WebhookProcess, context: ssl.SSLContext, case: Case) -> Handshake:
    """One review on a connection of its own (so one TLS handshake per review)."""
    started = time.monotonic()
    conn = webhook.connection(context)
    try:
        conn.request("POST", case.endpoint, body=case.body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        problem = check_response(case, response.status, response.read())
        assert conn.sock is not None
        peer = conn.sock.getpeercert(binary_form=True)
        number = x509.load_der_x509_certificate(peer).serial_number if peer else None
        return Handshake(started, number, problem)
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
        return Handshake(started, None, f"{case.uid}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def test_certificate_rotation_under_load(certificates: list[CertificateBundle], tmp_path: Path) -> None:
    """Three swaps while 16 clients open a new TLS connection per review: zero failed handshakes or
    reviews; every connection opened after the server picked up a pair is served that pair."""
    volume = SecretVolume(tmp_path / "tls", certificates[0])
    serials = [serial(bundle.cert_pem) for bundle in certificates]
    trust_all = client_context(*certificates)
    handshakes: list[Handshake] = []
    picked_up: list[float] = []  # when a probe first saw certificate i (i >= 1)
    stop = threading.Event()

    with webhook_on(volume, tmp_path / "webhook") as webhook:

        def client(number: int) -> None:
            index = 0
            while not stop.is_set():
                case = make_case(index * ROTATION_CLIENTS + number, f"rot{number}")
                handshakes.append(review_on_a_new_connection(webhook, trust_all, case))
                index += 1

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(ROTATION_CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            for generation in range(1, ROTATIONS + 1):
                bundle = certificates[generation]
                if generation == 2:
                    volume.rewrite_in_place(bundle)
                else:
                    volume.swap(bundle)
                deadline = time.monotonic() + 50 * RELOAD_SECONDS + 10
                while served_serial(webhook.port) != serials[generation]:
                    assert time.monotonic() < deadline, f"certificate {generation} was not picked up"
                    time.sleep(RELOAD_SECONDS / 4)
                picked_up.append(time.monotonic())
                time.sleep(0.5)  # load on the new certificate before the next swap
        finally:
            stop.set()
            for thread in threads:
                thread.join(REQUEST_TIMEOUT)

        # A new connection needs only the newest CA now; the first one no longer verifies.
        newest = client_context(certificates[-1])
        assert webhook.request("GET", "/healthz", content_type=None, context=newest).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            webhook.request("GET", "/healthz", content_type=None, context=client_context(certificates[0]))
        stderr = webhook.stderr()

    failures = [h.problem for h in handshakes if h.problem]
    assert failures == [], failures[:10]
    assert len(picked_up) == ROTATIONS
    assert len(handshakes) > 100, "too little load to say anything"
    # Each certificate served some of the load.
    assert {h.serial for h in handshakes} == set(serials)
    # Once the server presented certificate i, no connection opened later got an older one.
    for generation, moment in enumerate(picked_up, start=1):
        later = [h.serial for h in handshakes if h.started > moment and h.serial is not None]
        assert later, f"no load after certificate {generation} was picked up"
        older = [number for number in later if serials.index(number) < generation]
        assert older == [], f"{len(older)} connections got an older certificate than {generation}"
    # The half-written pair of the in-place rewrite was seen and refused, without failing a handshake.
    assert "do not load" in stderr
    assert stderr.count("TLS certificate reloaded") == ROTATIONS
    print(f"rotation: {len(handshakes)} handshakes, {ROTATIONS} swaps, 0 failed")


# --------------------------------------------------------------------------------------------
# Graceful shutdown on SIGTERM
# --------------------------------------------------------------------------------------------


def big_review(uid: str) -> bytes:
    """A worker pod with 1,000 containers of 20 env vars each (about 1.7 MB): ~0.1 s of work to judge."""
    document = copy.deepcopy(BASE_REVIEW)
    document["request"]["uid"] = uid
    spec = document["request"]["object"]["spec"]
    template = spec["containers"][0]
    spec["containers"] = [
        {**template, "name": f"c{i}", "env": [{"name": f"E{j}", "value": "v" * 50} for j in range(20)]}
        for i in range(BIG_POD_CONTAINERS)
    ]
    return json.dumps(document).encode()


@dataclass
class InFlight:
    """One client thread: connects, sends its review, waits for the answer."""

    uid: str
    body: bytes
    connected: threading.Event = field(default_factory=threading.Event)
    sent: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    answer: bytes = b""
    answered_at: float | None = None
    error: str | None = None


def _send_and_wait(webhook: WebhookProcess, flight: InFlight, go: threading.Event) -> None:
    conn = webhook.connection()
    conn.timeout = REQUEST_TIMEOUT
    try:
        conn.connect()  # TCP and the TLS handshake: accepted before SIGTERM
        flight.connected.set()
        go.wait(REQUEST_TIMEOUT)
        conn.request("POST", "/mutate", body=flight.body, headers={"Content-Type": "application/json"})
        flight.sent.set()
        response = conn.getresponse()
        flight.status, flight.answer = response.status, response.read()
        flight.answered_at = time.monotonic()
    except (OSError, http.client.HTTPException) as exc:
        flight.error = f"{type(exc).__name__}: {exc}"
    finally:
        flight.sent.set()
        conn.close()


def _wait_all(events: list[threading.Event], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"timed out waiting for {what}")


def _first_refusal(port: int, timeout: float) -> float:
    """Poll new connections until one is refused; when that happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic()
        except OSError:
            pass  # accepted by the backlog and then reset, or timed out: not yet a refusal
        time.sleep(0.01)
    raise AssertionError("new connections were still accepted long after SIGTERM")


def test_sigterm_answers_in_flight_reviews_then_refuses_and_exits_0(
    certificates: list[CertificateBundle], tmp_path: Path
) -> None:
    """SIGTERM with 16 big reviews sent and not yet answered: all 16 are answered (uid, patch), new
    connections are refused while some of them are still being answered, and the process exits 0."""
    volume = SecretVolume(tmp_path / "tls", certificates[0])
    flights = [
        InFlight(f"inflight-{i:02d}", big_review(f"inflight-{i:02d}")) for i in range(SHUTDOWN_CONNECTIONS)
    ]
    go = threading.Event()
    with webhook_on(volume, tmp_path / "webhook") as webhook:
        threads = [
            threading.Thread(target=_send_and_wait, args=(webhook, flight, go), daemon=True)
            for flight in flights
        ]
        for thread in threads:
            thread.start()
        try:
            _wait_all([f.connected for f in flights], 30, "the connections")
            go.set()
            _wait_all([f.sent for f in flights], REQUEST_TIMEOUT, "the reviews to be sent")
            unanswered_at_sigterm = sum(1 for f in flights if f.answered_at is None)
            sigterm_at = time.monotonic()
            webhook.process.send_signal(signal.SIGTERM)
            refused_at = _first_refusal(webhook.port, timeout=30)
        finally:
            go.set()
            for thread in threads:
                thread.join(REQUEST_TIMEOUT)
        code = webhook.process.wait(30)
        stderr = webhook.stderr()
        records = {record["uid"]: record for record in webhook.audit_records()}

    assert [f.error for f in flights if f.error] == []
    for flight in flights:
        case = Case("/mutate", flight.body, flight.uid, allowed=True, patched=True)
        assert check_response(case, flight.status or 0, flight.answer) is None
        assert flight.uid in records
    assert unanswered_at_sigterm >= SHUTDOWN_CONNECTIONS // 2, "too few reviews in flight to test anything"
    last_answer = max(f.answered_at for f in flights if f.answered_at is not None)
    assert sigterm_at < refused_at < last_answer, "refusing new connections while reviews are in flight"
    assert code == 0, stderr[-3000:]
    assert "shutting down" in stderr and "stopped" in stderr
    assert c.RULE_INTERNAL_ERROR not in json.dumps(list(records.values()))
