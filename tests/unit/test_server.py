"""The aiohttp edge: request checks, JSON errors, failing closed, audit lines, metrics, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gtc_admission import constants as c
from gtc_admission.admission import Outcome, handle_review
from gtc_admission.audit import AuditWriter, Timestamps, audit_line, rfc3339_utc
from gtc_admission.bindings import BindingSource, StaticBindings
from gtc_admission.config import Config, load_config
from gtc_admission.namespace_cache import CacheSettings, NamespaceCache
from gtc_admission.server import ServerSettings, StartupError, make_app, serve
from gtc_admission.tls import CertReloader, generate_certificates, write_certificates

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = ROOT / "deploy" / "webhook" / "config.yaml"
EXAMPLE_REVIEW = ROOT / "examples" / "worker-pod-review.json"
CANARY = "CANARY-9f3a6c1e-server-unit"

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG_FILE)


def worker_review(*, uid: str = "uid-1", dry_run: bool = False, env_value: str = "info") -> dict[str, Any]:
    review = json.loads(EXAMPLE_REVIEW.read_text())
    review["request"]["uid"] = uid
    review["request"]["dryRun"] = dry_run
    review["request"]["object"]["spec"]["containers"][0]["env"] = [{"name": "LOG_LEVEL", "value": env_value}]
    return dict(review)


class App:
    """A test app with its audit stream and metrics registry at hand."""

    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        audit: io.StringIO,
        registry: CollectorRegistry,
    ):
        self.client = client
        self.audit = audit
        self.registry = registry

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.getvalue().splitlines()]

    def sample(self, name: str, labels: Mapping[str, str]) -> float:
        return self.registry.get_sample_value(name, dict(labels)) or 0.0

    async def post(self, path: str, body: object, **kwargs: Any) -> tuple[int, Any]:
        response = await self.client.post(path, json=body, **kwargs)
        return response.status, await response.json()


@pytest.fixture
def make(aiohttp_client: ClientFactory, config: Config) -> Callable[..., Awaitable[App]]:
    async def factory(
        *,
        settings: ServerSettings | None = None,
        bindings: BindingSource | None = None,
        audit_stream: io.StringIO | None = None,
        **kwargs: Any,
    ) -> App:
        audit, registry = audit_stream or io.StringIO(), CollectorRegistry()
        app = make_app(
            settings or ServerSettings(),
            config,
            bindings if bindings is not None else StaticBindings(config.namespaces),
            audit_stream=audit,
            registry=registry,
            **kwargs,
        )
        return App(await aiohttp_client(app), audit, registry)

    return factory


# --------------------------------------------------------------------------------------------
# audit.py
# --------------------------------------------------------------------------------------------


def test_rfc3339_utc() -> None:
    """Times are RFC 3339 in UTC with a Z, whatever zone they were taken in."""
    moment = dt.datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc3339_utc(moment) == "2024-05-01T12:00:00.123Z"
    with pytest.raises(ValueError):
        rfc3339_utc(dt.datetime(2024, 5, 1))


def test_audit_line_is_compact_sorted_json_with_time() -> None:
    """One line, no spaces, keys sorted, the time added."""
    line = audit_line({"uid": "u", "decision": "allowed"}, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert line == '{"decision":"allowed","time":"2024-01-02T03:04:05.000Z","uid":"u"}'


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 1, 0, 0, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 2, 29, 7, 8, 9, 5000, tzinfo=dt.UTC),
    ],
)
def test_timestamps_match_rfc3339_utc(moment: dt.datetime) -> None:
    """The writer's cached formatting gives exactly rfc3339_utc's text, across second and year changes."""
    stamps = Timestamps()
    assert stamps.format(moment.timestamp() - 1.5)  # another second first: the cache must follow
    assert stamps.format(moment.timestamp()) == rfc3339_utc(moment)


def test_timestamps_agree_with_datetime_over_many_instants() -> None:
    """Any instant, stamped in order (the cache hit and missed), reads as datetime.fromtimestamp does."""
    stamps = Timestamps()
    start = dt.datetime(2026, 12, 31, 23, 59, 58, tzinfo=dt.UTC).timestamp()
    for step in range(0, 4_000_000, 997):  # about 4,000 instants over 4 s, a year change among them
        epoch = start + step / 1_000_000
        assert stamps.format(epoch) == rfc3339_utc(dt.datetime.fromtimestamp(epoch, dt.UTC))


def test_audit_line_is_ascii_whatever_the_names() -> None:
    """Non-ASCII names (a client may send them) are escaped as \\uXXXX: one ASCII line, same record."""
    record = {"uid": "u", "name": "caf\u00e9-\u0440\u043e\u0434-\U0001f600", "user": "line\nbreak\u2028"}
    moment = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    line = audit_line(record, moment)
    assert line.isascii() and "\n" not in line
    assert "\\u00e9" in line and "\\ud83d\\ude00" in line
    assert json.loads(line) == {**record, "time": "2024-01-02T03:04:05.000Z"}


def test_audit_line_text_does_not_depend_on_the_encoder() -> None:
    """An ASCII record gives exactly the text of json.dumps(compact, sorted): the format is stable."""
    record = {"uid": "u", "rules": ["a", "b"], "dryRun": False, "env": None, "z": {"y": 1, "x": '\t"/'}}
    moment = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    expected = json.dumps(
        {**record, "time": "2024-01-02T03:04:05.000Z"}, separators=(",", ":"), sort_keys=True
    )
    assert audit_line(record, moment) == expected


def test_audit_writer_flushes_every_line() -> None:
    """Each record is written as one line and flushed at once."""

    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Stream()
    writer = AuditWriter(stream, clock=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    writer.write({"uid": "a"})
    writer.write({"uid": "b"})
    assert stream.getvalue().splitlines() == [
        '{"time":"2024-01-01T00:00:00.000Z","uid":"a"}',
        '{"time":"2024-01-01T00:00:00.000Z","uid":"b"}',
    ]
    assert stream.flushes == 2


def test_audit_writer_lines_stay_whole_across_threads() -> None:
    """Concurrent writers never interleave inside a line."""
    stream = io.StringIO()
    writer = AuditWriter(stream)

    def write_many(n: int) -> None:
        for _ in range(50):
            writer.write({"n": n, "pad": "x" * 500})

    threads = [threading.Thread(target=write_many, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 400
    assert all(json.loads(line)["pad"] == "x" * 500 for line in lines)


# --------------------------------------------------------------------------------------------
# Health, readiness, metrics
# --------------------------------------------------------------------------------------------


async def test_healthz(make: Callable[..., Awaitable[App]]) -> None:
    """/healthz answers 200 as long as the process serves."""
    app = await make()
    response = await app.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_with_static_bindings(make: Callable[..., Awaitable[App]]) -> None:
    """Static bindings are ready at once."""
    app = await make()
    response = await app.client.get("/readyz")
    assert response.status == 200


class NeverSyncs:
    def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
        raise ConnectionError("no cluster here")

    def watch(
        self, *, resource_version: str, timeout_seconds: int
    ) -> Generator[Mapping[str, Any], None, None]:
        raise AssertionError("never reached")
        yield {}

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_readyz_503_until_synced_and_workers_refused(make: Callable[..., Awaitable[App]]) -> None:
    """A cache that never syncs: /readyz 503, a worker in a label-bound namespace gets a retriable refusal."""
    cache = NamespaceCache(NeverSyncs(), CacheSettings(backoff_initial_seconds=5, backoff_max_seconds=5))
    app = await make(bindings=cache, namespace_cache=cache)
    response = await app.client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "not ready"
    status, body = await app.post("/mutate", worker_review(uid="not-ready"))
    assert status == 200
    assert body["response"]["uid"] == "not-ready"
    assert body["response"]["allowed"] is False
    assert c.RULE_BINDINGS_NOT_READY in app.audit_records()[-1]["rules"]


async def test_metrics_endpoint(make: Callable[..., Awaitable[App]]) -> None:
    """/metrics serves the Prometheus text of this app's registry."""
    app = await make()
    await app.post("/mutate", worker_review())
    response = await app.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'gtc_admission_reviews_total{decision="allowed",endpoint="mutate",rule="none"} 1.0' in text


# --------------------------------------------------------------------------------------------
# Request errors
# --------------------------------------------------------------------------------------------


async def test_wrong_content_type_is_415(make: Callable[..., Awaitable[App]]) -> None:
    """A body that is not declared application/json is refused with 415 and counted."""
    app = await make()
    response = await app.client.post("/validate", data=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert "error" in await response.json()
    assert app.sample("gtc_admission_bad_requests_total", {"endpoint": "validate", "status": "415"}) == 1


async def test_missing_content_type_is_415(make: Callable[..., Awaitable[App]]) -> None:
    """No Content-Type at all is not JSON either."""
    app = await make()
    response = await app.client.post("/mutate", data=b"{}", skip_auto_headers=["Content-Type"])
    assert response.status == 415


async def test_json_with_charset_is_accepted(make: Callable[..., Awaitable[App]]) -> None:
    """application/json; charset=utf-8 is JSON."""
    app = await make()
    response = await app.client.post(
        "/mutate",
        data=json.dumps(worker_review()).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 200


async def test_empty_body_is_400(make: Callable[..., Awaitable[App]]) -> None:
    """An empty body gets 400 with a JSON error."""
    app = await make()
    response = await app.client.post("/mutate", data=b"", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert await response.json() == {"error": "empty request body"}


async def test_not_json_is_400(make: Callable[..., Awaitable[App]]) -> None:
    """A body that does not parse is a 4xx JSON error, not a 500."""
    app = await make()
    response = await app.client.post("/mutate", data=b"{nope", headers={"Content-Type": "application/json"})
    assert 400 <= response.status < 500
    assert "error" in await response.json()


async def test_body_over_the_limit_is_413(make: Callable[..., Awaitable[App]]) -> None:
    """Over max_body_bytes: 413, with or without a Content-Length, and the server keeps serving."""
    app = await make(settings=ServerSettings(max_body_bytes=2048))
    big = json.dumps({"pad": "x" * 4096}).encode()
    response = await app.client.post("/mutate", data=big, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert "error" in await response.json()

    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 1024

    response = await app.client.post("/validate", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert "error" in await response.json()
    assert app.sample("gtc_admission_bad_requests_total", {"endpoint": "mutate", "status": "413"}) == 1
    assert app.sample("gtc_admission_bad_requests_total", {"endpoint": "validate", "status": "413"}) == 1
    assert (await app.client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/mutate", 405),
        ("PUT", "/validate", 405),
        ("GET", "/nowhere", 404),
        ("POST", "/nowhere/deeper", 404),
        ("POST", "/healthz", 405),
        ("DELETE", "/metrics", 405),
    ],
)
async def test_routing_errors_have_json_bodies(
    make: Callable[..., Awaitable[App]], method: str, path: str, status: int
) -> None:
    """aiohttp's own 404/405 answers carry a JSON error body too."""
    app = await make()
    response = await app.client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    assert "error" in await response.json()
    if status == 405:
        assert response.headers["Allow"] == ("POST" if path in ("/mutate", "/validate") else "GET,HEAD")


# --------------------------------------------------------------------------------------------
# Decisions: audit, metrics, dryRun, internal errors
# --------------------------------------------------------------------------------------------


async def test_worker_review_is_answered_audited_and_counted(make: Callable[..., Awaitable[App]]) -> None:
    """A worker pod gets its patch; one audit line with a time is written; the review is counted."""
    app = await make()
    status, body = await app.post("/mutate", worker_review(uid="abc-123"))
    assert status == 200
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "abc-123"
    assert body["response"]["allowed"] is True
    assert body["response"]["patchType"] == "JSONPatch"
    (record,) = app.audit_records()
    assert record["uid"] == "abc-123"
    assert record["decision"] == "allowed"
    assert record["time"].endswith("Z")
    dt.datetime.fromisoformat(record["time"])
    labels = {"endpoint": "mutate", "decision": "allowed"}
    assert app.sample("gtc_admission_review_duration_seconds_count", labels) == 1


async def test_dry_run_is_audited_but_not_counted(make: Callable[..., Awaitable[App]]) -> None:
    """dryRun: same decision, an audit line saying dryRun, and no counter moves."""
    app = await make()
    status, body = await app.post("/mutate", worker_review(uid="dry", dry_run=True))
    assert status == 200
    assert body["response"]["allowed"] is True
    (record,) = app.audit_records()
    assert record["dryRun"] is True
    assert (
        app.sample(
            "gtc_admission_review_duration_seconds_count", {"endpoint": "mutate", "decision": "allowed"}
        )
        == 0
    )


async def test_handler_receives_endpoint_config_and_bindings(
    make: Callable[..., Awaitable[App]], config: Config
) -> None:
    """The server passes the decoded body, its endpoint, the config and the bindings to the core."""
    seen: dict[str, Any] = {}
    bindings = StaticBindings(config.namespaces)

    def spy(body: object, *, endpoint: Any, config: Config, bindings: BindingSource) -> Outcome:
        seen.update(body=body, endpoint=endpoint, config=config, bindings=bindings)
        return handle_review(body, endpoint=endpoint, config=config, bindings=bindings)

    app = await make(bindings=bindings, review_handler=spy)
    review = worker_review(uid="spy")
    await app.post("/validate", review)
    assert seen == {"body": review, "endpoint": "validate", "config": config, "bindings": bindings}


def _explode(body: object, **_: Any) -> Outcome:
    raise RuntimeError(f"boom with a value from the pod: {CANARY}")


async def test_internal_error_fails_closed_with_an_error_id(
    make: Callable[..., Awaitable[App]], caplog: pytest.LogCaptureFixture
) -> None:
    """Unexpected exception: a denial echoing the uid, an error id in the log, no value logged."""
    app = await make(review_handler=_explode)
    with caplog.at_level(logging.DEBUG):
        status, body = await app.post("/mutate", worker_review(uid="kaboom", env_value=CANARY))
    assert status == 200
    response = body["response"]
    assert response["uid"] == "kaboom"
    assert response["allowed"] is False
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the internal error must be logged"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged
    assert CANARY not in logged
    assert CANARY not in json.dumps(body)
    (record,) = app.audit_records()
    assert record["decision"] == "denied"
    assert c.RULE_INTERNAL_ERROR in record["rules"]
    error_id = next(word for word in logged.split() if len(word) == 16 and word.isalnum())
    assert error_id in json.dumps(body)
    assert (
        app.sample(
            "gtc_admission_reviews_total",
            {"endpoint": "mutate", "decision": "denied", "rule": c.RULE_INTERNAL_ERROR},
        )
        == 1
    )


async def test_internal_error_answer_failing_still_denies(make: Callable[..., Awaitable[App]]) -> None:
    """If even the internal-error answer fails, a minimal well-formed denial with the uid goes out."""

    def also_explodes(body: object, *, endpoint: Any, error_id: str) -> Outcome:
        raise ValueError("second failure")

    app = await make(review_handler=_explode, internal_error_handler=also_explodes)
    status, body = await app.post("/validate", worker_review(uid="double"))
    assert status == 200
    assert body["response"]["uid"] == "double"
    assert body["response"]["allowed"] is False
    assert body["response"]["auditAnnotations"]["rules"] == c.RULE_INTERNAL_ERROR


async def test_an_answer_that_is_not_json_still_denies(
    make: Callable[..., Awaitable[App]], caplog: pytest.LogCaptureFixture
) -> None:
    """A review handler whose answer cannot be encoded: a minimal denial with the uid, the error logged."""

    def unencodable(body: object, **kwargs: Any) -> Outcome:
        outcome = handle_review(body, **kwargs)
        outcome.review["response"]["odd"] = {CANARY}  # a set: not JSON
        return outcome

    app = await make(review_handler=unencodable)
    with caplog.at_level(logging.ERROR):
        status, body = await app.post("/mutate", worker_review(uid="unencodable"))
    assert status == 200
    assert body["response"]["uid"] == "unencodable"
    assert body["response"]["allowed"] is False
    assert body["response"]["auditAnnotations"]["rules"] == c.RULE_INTERNAL_ERROR
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot encode the answer" in logged
    assert CANARY not in logged


async def test_audit_failure_does_not_break_the_answer(
    make: Callable[..., Awaitable[App]], caplog: pytest.LogCaptureFixture
) -> None:
    """A broken audit stream is logged; the API server still gets its answer."""

    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    app = await make(audit_stream=Broken())
    with caplog.at_level(logging.ERROR):
        status, body = await app.post("/mutate", worker_review(uid="no-audit"))
    assert status == 200
    assert body["response"]["uid"] == "no-audit"
    assert any("audit write failed" in r.getMessage() for r in caplog.records)


async def test_request_body_is_never_logged(
    make: Callable[..., Awaitable[App]], caplog: pytest.LogCaptureFixture
) -> None:
    """Neither decisions nor refusals put request content into the log."""
    app = await make()
    with caplog.at_level(logging.DEBUG):
        await app.post("/mutate", worker_review(env_value=CANARY))
        await app.post("/validate", worker_review(env_value=CANARY))
        await app.client.post("/mutate", data=CANARY.encode(), headers={"Content-Type": "application/json"})
        await app.client.post("/mutate", data=CANARY.encode(), headers={"Content-Type": "text/plain"})
    assert all(CANARY not in r.getMessage() for r in caplog.records)
    assert CANARY not in app.audit.getvalue()


# --------------------------------------------------------------------------------------------
# Background work through cleanup_ctx
# --------------------------------------------------------------------------------------------


class OneList:
    """A cluster with one labelled namespace whose watch blocks until interrupted."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self.closed = False

    def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
        labels = {c.LABEL_ENV: "prod", c.LABEL_TENANT: "globex"}
        item = {"metadata": {"name": "globex-prod", "resourceVersion": "5", "labels": labels}}
        return {"metadata": {"resourceVersion": "5"}, "items": [item]}

    def watch(
        self, *, resource_version: str, timeout_seconds: int
    ) -> Generator[Mapping[str, Any], None, None]:
        self.interrupted.wait(10)
        yield from ()

    def interrupt(self) -> None:
        self.interrupted.set()

    def close(self) -> None:
        self.closed = True


async def test_namespace_cache_runs_with_the_app(make: Callable[..., Awaitable[App]]) -> None:
    """The cache starts with the app, makes /readyz ready once synced, binds by labels, and stops with it."""
    api = OneList()
    cache = NamespaceCache(api)
    app = await make(bindings=cache, namespace_cache=cache)
    for _ in range(500):
        if (await app.client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("never ready")
    review = worker_review(uid="globex")
    review["request"]["namespace"] = "globex-prod"
    status, body = await app.post("/mutate", review)
    assert status == 200 and body["response"]["patchType"] == "JSONPatch"
    await app.client.close()
    assert api.closed


async def test_certificate_reloader_runs_with_the_app(
    make: Callable[..., Awaitable[App]], tmp_path: Path
) -> None:
    """The reloader task polls while the app runs and is cancelled at cleanup."""
    first, second = generate_certificates(["localhost"]), generate_certificates(["localhost"])
    paths = write_certificates(first, tmp_path)
    reloader = CertReloader(paths.cert, paths.key)
    checks: list[bool] = []
    original = reloader.check

    def counting_check() -> bool:
        result = original()
        checks.append(result)
        return result

    reloader.check = counting_check  # type: ignore[method-assign]
    app = await make(settings=ServerSettings(tls_reload_seconds=0.01), cert_reloader=reloader)
    write_certificates(second, tmp_path)
    for _ in range(500):
        if True in checks:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the reloader did not run")
    await app.client.close()
    count = len(checks)
    await asyncio.sleep(0.05)
    assert len(checks) == count, "the reloader kept running after cleanup"


# --------------------------------------------------------------------------------------------
# serve(): start-up errors and a clean stop
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_refuses_missing_certificate_files(config: Config, tmp_path: Path) -> None:
    """Certificate files that do not exist stop the start with a StartupError naming them."""
    settings = ServerSettings(port=free_port(), tls_cert=tmp_path / "no.crt", tls_key=tmp_path / "no.key")
    with pytest.raises(StartupError, match=r"no\.crt"):
        await serve(settings, config, install_signal_handlers=False)


async def test_serve_refuses_a_busy_port(config: Config) -> None:
    """An address already in use is a StartupError, not a traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = ServerSettings(port=busy.getsockname()[1])
        with pytest.raises(StartupError, match="cannot listen"):
            await serve(settings, config, install_signal_handlers=False)


async def test_serve_starts_and_stops(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    """serve() with a generated certificate listens, logs the CA path, and returns when asked to stop."""
    stop = asyncio.Event()
    port = free_port()
    with caplog.at_level(logging.INFO, logger="gtc_admission"):
        task = asyncio.create_task(
            serve(ServerSettings(port=port), config, stop=stop, install_signal_handlers=False)
        )
        for _ in range(500):
            if any("listening on" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        else:
            task.cancel()
            pytest.fail("serve did not start")
        ca_lines = [r.getMessage() for r in caplog.records if "CA certificate:" in r.getMessage()]
        ca_path = Path(ca_lines[0].rsplit("CA certificate: ", 1)[1])
        assert ca_path.is_file()
        assert oct(ca_path.parent.stat().st_mode & 0o777) == "0o700"
        client_tls = ssl.create_default_context(cafile=str(ca_path))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{port}/healthz", ssl=client_tls) as response,
        ):
            assert response.status == 200
        stop.set()
        await asyncio.wait_for(task, 10)
    assert not ca_path.exists(), "the generated key material is removed at exit"
