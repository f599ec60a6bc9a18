"""The real ``gtc-admission serve`` over real TLS on 127.0.0.1: endpoints, bad input, rotation, canary."""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gtc_admission import constants as c
from gtc_admission.tls import CertificateBundle, generate_certificates, write_certificates
from tests.integration.webhook_fixtures import ROOT, WebhookProcess, running_webhook

pytestmark = pytest.mark.integration

EXAMPLE_REVIEW = ROOT / "examples" / "worker-pod-review.json"
CANARY = "CANARY-9f3a1d7e-never-in-logs"
RELOAD_SECONDS = 0.2


def worker_review(uid: str = "uid-1") -> dict[str, Any]:
    review: dict[str, Any] = json.loads(EXAMPLE_REVIEW.read_text())
    review["request"]["uid"] = uid
    return review


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CertificateBundle]:
    directory = tmp_path_factory.mktemp("certs")
    bundle = generate_certificates(["localhost"], ["127.0.0.1"])
    write_certificates(bundle, directory)
    return directory, bundle


@pytest.fixture(scope="module")
def webhook(
    tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, CertificateBundle]
) -> Iterator[WebhookProcess]:
    """One server for the module, with certificate files it re-reads every RELOAD_SECONDS."""
    directory, _ = certs
    with running_webhook(
        tmp_path_factory.mktemp("webhook"),
        tls=(directory / "tls.crt", directory / "tls.key"),
        ca_file=directory / "ca.crt",
        extra_args=["--tls-reload-interval", str(RELOAD_SECONDS)],
    ) as process:
        yield process


def served_serial(port: int) -> int:
    """The serial of the certificate a new connection is given (no verification: only identity matters)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


# --------------------------------------------------------------------------------------------
# Every endpoint
# --------------------------------------------------------------------------------------------


def test_health_and_readiness(webhook: WebhookProcess) -> None:
    """/healthz and /readyz answer 200 (static bindings are ready at once)."""
    assert webhook.request("GET", "/healthz", content_type=None).json() == {"status": "ok"}
    ready = webhook.request("GET", "/readyz", content_type=None)
    assert ready.status == 200


def test_mutate_patches_a_worker_and_audits_it(webhook: WebhookProcess) -> None:
    """/mutate answers the worker with a JSONPatch echoing the uid, and writes one audit line for it."""
    result = webhook.post_json("/mutate", worker_review("mutate-1"))
    assert result.status == 200
    response = result.json()["response"]
    assert response["uid"] == "mutate-1"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert response["auditAnnotations"][c.AUDIT_ANNOTATION_DECISION] == "allowed"
    record = _wait_for_audit(webhook, "mutate-1")
    assert record["decision"] == "allowed"
    assert record["time"].endswith("Z")


def test_validate_judges_the_object_as_sent(webhook: WebhookProcess) -> None:
    """/validate never patches; a worker still on the default ServiceAccount is denied there."""
    result = webhook.post_json("/validate", worker_review("validate-1"))
    assert result.status == 200
    response = result.json()["response"]
    assert response["uid"] == "validate-1"
    assert "patch" not in response
    assert response["allowed"] is False
    assert c.RULE_WORKER_SERVICE_ACCOUNT in response["auditAnnotations"][c.AUDIT_ANNOTATION_RULES]


def test_metrics_count_reviews(webhook: WebhookProcess) -> None:
    """/metrics is Prometheus text that counts the reviews this server answered."""
    webhook.post_json("/mutate", worker_review("metrics-1"))
    result = webhook.request("GET", "/metrics", content_type=None)
    assert result.status == 200
    assert result.headers["Content-Type"].startswith("text/plain")
    text = result.body.decode()
    assert 'gtc_admission_reviews_total{decision="allowed",endpoint="mutate",rule="none"}' in text
    assert "gtc_admission_review_duration_seconds_bucket" in text


def _wait_for_audit(webhook: WebhookProcess, uid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in webhook.audit_records():
            if record.get("uid") == uid:
                return record
        time.sleep(0.02)
    raise AssertionError(f"no audit line for {uid}")


# --------------------------------------------------------------------------------------------
# The error table: a 4xx with a JSON error, never a 500, and the server keeps serving
# --------------------------------------------------------------------------------------------


def _review_without(*path: str) -> bytes:
    review = worker_review("bad")
    target = review
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(review).encode()


def _review_with(value: object, *path: str) -> bytes:
    review = worker_review("bad")
    target = review
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(review).encode()


ERROR_TABLE = [
    pytest.param(b"{this is not json", "application/json", 400, "json", id="not-json"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "deep", id="too-deep"),
    pytest.param(_review_with("Pod", "kind"), "application/json", 400, "kind", id="wrong-kind"),
    pytest.param(
        _review_with("admission.k8s.io/v1beta1", "apiVersion"),
        "application/json",
        400,
        "apiversion",
        id="wrong-apiversion",
    ),
    pytest.param(_review_without("request"), "application/json", 400, "request", id="no-request"),
    pytest.param(_review_without("request", "uid"), "application/json", 400, "uid", id="no-uid"),
    pytest.param(b"[1, 2, 3]", "application/json", 400, "object", id="non-object-body"),
    pytest.param(
        _review_with(["a", "list"], "request"), "application/json", 400, "request", id="non-object-request"
    ),
    pytest.param(b"{}" + b" " * (5 * 1024 * 1024), "application/json", 413, "larger", id="body-too-large"),
    pytest.param(
        json.dumps(worker_review()).encode(), "text/plain", 415, "content-type", id="wrong-content-type"
    ),
    pytest.param(b"", "application/json", 400, "empty", id="empty-body"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "error"), ERROR_TABLE)
@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_error_table(
    webhook: WebhookProcess, *, endpoint: str, body: bytes, content_type: str, status: int, error: str
) -> None:
    """Each bad request gets its 4xx and a JSON {"error": ...} naming the problem; the server goes on."""
    result = webhook.request("POST", endpoint, body, content_type=content_type)
    assert result.status == status, result.body[:300]
    assert result.headers["Content-Type"].startswith("application/json")
    message = result.json()["error"]
    assert isinstance(message, str)
    assert error in message.lower()
    assert webhook.request("GET", "/healthz", content_type=None).status == 200
    assert webhook.post_json("/mutate", worker_review("after-error")).status == 200
    assert webhook.process.poll() is None


def test_bad_requests_are_counted_and_never_500(webhook: WebhookProcess) -> None:
    """Refusals show up in the bad-request counter by status; nothing was ever answered with a 5xx."""
    webhook.request("POST", "/validate", b"{", content_type="application/json")
    text = webhook.request("GET", "/metrics", content_type=None).body.decode()
    assert 'gtc_admission_bad_requests_total{endpoint="validate",status="400"}' in text
    assert 'status="5' not in text


# --------------------------------------------------------------------------------------------
# TLS: the floor, and rotation while serving
# --------------------------------------------------------------------------------------------


def _old_client(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS < 1.2 is deprecated in Python too
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@contextlib.contextmanager
def _lax_tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A throwaway server that still accepts TLS 1.0/1.1: the control showing the old client can connect."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def _tls_version(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def test_tls_1_1_is_refused_and_1_2_accepted(
    webhook: WebhookProcess, certs: tuple[Path, CertificateBundle]
) -> None:
    """A TLS 1.1 client is refused by the webhook (it does get TLS 1.1 from a lax server); TLS 1.2 works."""
    directory, _ = certs
    old = _old_client(webhook.ca_file)
    with _lax_tls_server(directory / "tls.crt", directory / "tls.key") as lax_port:
        assert _tls_version(lax_port, old) == "TLSv1.1"
    with pytest.raises(ssl.SSLError):
        _tls_version(webhook.port, old)

    tls12 = ssl.create_default_context(cafile=str(webhook.ca_file))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _tls_version(webhook.port, tls12) == "TLSv1.2"
    assert webhook.request("GET", "/healthz", content_type=None).status == 200


def test_certificate_rotation_while_serving(
    webhook: WebhookProcess, certs: tuple[Path, CertificateBundle], tmp_path: Path
) -> None:
    """Swapping the files: new connections get the new certificate, an open connection keeps working."""
    directory, original = certs
    assert served_serial(webhook.port) == serial_of(original.cert_pem)

    # An open keep-alive connection made before the swap.
    old_ca = tmp_path / "old-ca.crt"
    old_ca.write_bytes(original.ca_cert_pem)
    kept = webhook.connection(webhook.tls_context(old_ca))
    try:
        assert webhook.request("GET", "/healthz", content_type=None, connection=kept).status == 200

        rotated = generate_certificates(["localhost"], ["127.0.0.1"])
        # As a mounted Secret does it: write elsewhere, then swap in with renames (the key first is fine:
        # a half-swapped pair is simply not loaded until both files match).
        staging = tmp_path / "staging"
        write_certificates(rotated, staging)
        (staging / "tls.key").replace(directory / "tls.key")
        (staging / "tls.crt").replace(directory / "tls.crt")
        (staging / "ca.crt").replace(directory / "ca.crt")

        deadline = time.monotonic() + 10 * RELOAD_SECONDS + 5
        while served_serial(webhook.port) != serial_of(rotated.cert_pem):
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(RELOAD_SECONDS / 4)

        # New connections verify against the new CA only.
        new_ca = tmp_path / "new-ca.crt"
        new_ca.write_bytes(rotated.ca_cert_pem)
        new = webhook.request("GET", "/healthz", content_type=None, context=webhook.tls_context(new_ca))
        assert new.status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            webhook.request("GET", "/healthz", content_type=None, context=webhook.tls_context(old_ca))

        # The connection opened before the swap still works, on its old certificate.
        assert webhook.request("GET", "/healthz", content_type=None, connection=kept).status == 200
        assert kept.sock is not None
        peer = kept.sock.getpeercert(binary_form=True)
        assert peer is not None
        assert x509.load_der_x509_certificate(peer).serial_number == serial_of(original.cert_pem)
        assert "TLS certificate reloaded" in webhook.stderr()
    finally:
        kept.close()
        # Put the module's pair back so that later tests see the CA they expect.
        write_certificates(original, directory)
        deadline = time.monotonic() + 10 * RELOAD_SECONDS + 5
        while served_serial(webhook.port) != serial_of(original.cert_pem) and time.monotonic() < deadline:
            time.sleep(RELOAD_SECONDS / 4)


# --------------------------------------------------------------------------------------------
# A canary value in a pod's env never reaches logs, audit lines or metrics
# --------------------------------------------------------------------------------------------


def test_canary_env_value_never_leaks(webhook: WebhookProcess) -> None:
    """A canary in env values (plain, overriding VAULT_ADDR) is in no audit line, log line or metric."""
    review = worker_review("canary-1")
    container = review["request"]["object"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "API_TOKEN", "value": CANARY},
        {"name": c.ENV_VAULT_ADDR, "value": f"https://{CANARY}.example:8200"},
        {"name": c.ENV_GREENTIC_TENANT, "value": CANARY.lower()},
    ]
    denied = copy.deepcopy(review)
    denied["request"]["uid"] = "canary-2"
    denied["request"]["object"]["spec"]["serviceAccountName"] = "gtc-worker"

    results = [
        webhook.post_json("/mutate", review),
        webhook.post_json("/validate", review),
        webhook.post_json("/mutate", denied),
        webhook.request("POST", "/mutate", CANARY.encode(), content_type="application/json"),
        webhook.request("POST", "/mutate", json.dumps(review).encode(), content_type="text/plain"),
    ]
    assert all(r.status < 500 for r in results)
    first = results[0].json()["response"]
    # The tenant mismatch denies it; the VAULT_ADDR override is named without its value.
    assert first["allowed"] is False
    for result in results:
        if result.status == 200:
            response = result.json()["response"]
            for text in [*response.get("warnings", []), json.dumps(response.get("status", {}))]:
                assert CANARY not in text and CANARY.lower() not in text

    _wait_for_audit(webhook, "canary-2")
    metrics = webhook.request("GET", "/metrics", content_type=None).body.decode()
    for where, text in (("audit", webhook.stdout()), ("stderr", webhook.stderr()), ("metrics", metrics)):
        assert CANARY not in text, f"canary found in {where}"
        assert CANARY.lower() not in text, f"canary found in {where}"


# --------------------------------------------------------------------------------------------
# Start-up without certificates, and a graceful stop
# --------------------------------------------------------------------------------------------


def test_self_signed_start_and_graceful_stop(tmp_path: Path) -> None:
    """Without --tls-cert the server generates a CA (path in the log) and serves with it; SIGTERM exits 0."""
    with running_webhook(tmp_path) as process:
        assert process.ca_file.is_file()
        assert oct(process.ca_file.parent.stat().st_mode & 0o777) == "0o700"
        for host in ("localhost", "127.0.0.1"):
            conn = http.client.HTTPSConnection(host, process.port, context=process.tls_context(), timeout=10)
            assert process.request("GET", "/healthz", content_type=None, connection=conn).status == 200
            conn.close()
        assert process.post_json("/mutate", worker_review("self-signed")).status == 200
        code = process.stop()
        assert code == 0, process.stderr()[-2000:]
        assert "stopped" in process.stderr()
        assert not process.ca_file.exists(), "the generated key material is removed at exit"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", process.port), timeout=2).close()
