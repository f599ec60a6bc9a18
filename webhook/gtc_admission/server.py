"""The HTTPS server: the edge between the API server and the pure decision core.

The server reads the body, checks what is about the *request* (content type, size, JSON), hands the
decoded review to ``handle_review`` and turns the result into HTTP. Request errors become a 4xx with a JSON
body ``{"error": ...}``; anything the core raises unexpectedly becomes a well-formed denial (fail closed)
with an error id in the log, never a 500. Every decision is written to the audit stream and counted.

Endpoints: ``POST /mutate``, ``POST /validate``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

``run_workers`` is ``serve --workers N``: N processes, each a full server (own certificate reloader, metrics,
audit writer, namespace cache), sharing the port with SO_REUSEPORT, so that one replica uses every core it is
given; the parent only supervises them. Their metrics are merged on every scrape (prometheus_client's
multiprocess mode), because Prometheus reaches one process per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gtc_admission import constants as c
from gtc_admission.admission import (
    BadRequest,
    Endpoint,
    Outcome,
    decode_body,
    handle_review,
    internal_error_outcome,
)
from gtc_admission.audit import AuditWriter
from gtc_admission.bindings import BindingSource, LayeredBindings, StaticBindings
from gtc_admission.config import Config
from gtc_admission.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gtc_admission.metrics import Metrics
from gtc_admission.namespace_cache import ClusterCredentials, KubernetesNamespaceApi, NamespaceCache
from gtc_admission.tls import (
    DEFAULT_RELOAD_INTERVAL_SECONDS,
    LOCAL_DNS_NAMES,
    LOCAL_IP_ADDRESSES,
    CertReloader,
    generate_certificates,
    write_certificates,
)

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE: Final = "application/json"
# The API server stores objects of up to 1.5 MiB; an UPDATE review carries object and oldObject plus the
# envelope, so 4 MiB admits every legitimate review and still bounds what one request can make us hold.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8443
ENDPOINT_MUTATE: Final = "mutate"
ENDPOINT_VALIDATE: Final = "validate"
# Every response names the process that answered: with --workers N, which worker took the connection.
PID_HEADER: Final = "X-Gtc-Admission-Pid"
# prometheus_client reads this when it is imported, to keep metric values in files shared by processes.
ENV_PROMETHEUS_MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
MAX_WORKERS: Final = 64  # more processes than that in one replica is a typo, not a deployment
# How often a worker checks that its supervisor is still there (it stops when it is gone: no orphans).
SUPERVISOR_POLL_SECONDS: Final = 1.0
# A worker that has not stopped this long after its shutdown could have ended is killed.
WORKER_KILL_GRACE_SECONDS: Final = 5.0
# Shutdown drain: the listener is closed, then the server keeps serving until no request has been in
# progress or started for this long (a review sent just before SIGTERM may still sit in a socket buffer:
# the loop reads it within milliseconds once it is free), or until the shutdown timeout.
DRAIN_QUIET_SECONDS: Final = 0.25
DRAIN_POLL_SECONDS: Final = 0.02


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs; built once in main from the command line and the environment."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None  # both or neither; without them a self-signed pair is generated
    tls_key: Path | None = None
    tls_reload_seconds: float = DEFAULT_RELOAD_INTERVAL_SECONDS
    max_body_bytes: int = MAX_BODY_BYTES
    cluster: ClusterCredentials | None = None  # None: static bindings only
    # In-flight reviews get this long to finish after SIGTERM before connections are closed.
    shutdown_timeout_seconds: float = 10.0
    namespace_cache_stop_seconds: float = 5.0
    # Set by run_workers for each worker process, never from the command line:
    reuse_port: bool = False  # SO_REUSEPORT, so that the workers share the port
    metrics_dir: Path | None = None  # prometheus_client multiprocess folder: /metrics merges every worker
    supervisor_pid: int | None = None  # stop when this process is gone


class ReviewHandler(Protocol):
    def __call__(
        self, body: object, *, endpoint: Endpoint, config: Config, bindings: BindingSource
    ) -> Outcome: ...


class InternalErrorHandler(Protocol):
    def __call__(self, body: object, *, endpoint: Endpoint, error_id: str) -> Outcome: ...


class StartupError(Exception):
    """The server cannot start (certificate, cluster credentials, address); the message says which."""


@dataclass(frozen=True)
class _State:
    config: Config
    bindings: BindingSource
    audit: AuditWriter
    metrics: Metrics
    review: ReviewHandler
    internal_error: InternalErrorHandler
    max_body_bytes: int
    exposition: Callable[[], bytes]  # the /metrics body


STATE: Final = web.AppKey("state", _State)


class _InFlight:
    """Requests in progress and started, for the shutdown drain (mutable, unlike _State)."""

    def __init__(self) -> None:
        self.in_progress = 0
        self.started = 0
        self.draining = False


IN_FLIGHT: Final = web.AppKey("in_flight", _InFlight)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _new_error_id() -> str:
    return uuid.uuid4().hex[:16]


def _log_internal_error(what: str, error_id: str, endpoint: str, exc: BaseException) -> None:
    # The traceback's frames (file, line, code) but not the exception's message: a message can quote a
    # value from the review, and values must never reach the log.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s %s on /%s: %s\n%s", what, error_id, endpoint, type(exc).__name__, frames.rstrip())


def _last_resort_review(body: object, error_id: str) -> dict[str, Any]:
    """A minimal denial for when even the core's internal-error answer failed: the API server needs a uid."""
    request = body.get("request") if isinstance(body, Mapping) else None
    uid = request.get("uid") if isinstance(request, Mapping) else None
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": uid if isinstance(uid, str) else "",
            "allowed": False,
            "status": {"code": 500, "message": f"gtc-admission internal error {error_id}; retry later"},
            "auditAnnotations": {
                c.AUDIT_ANNOTATION_DECISION: "denied",
                c.AUDIT_ANNOTATION_RULES: c.RULE_INTERNAL_ERROR,
            },
        },
    }


async def _review(request: web.Request, endpoint: Endpoint) -> web.Response:
    state = request.app[STATE]

    def bad(status: int, message: str) -> web.Response:
        state.metrics.observe_bad_request(endpoint=endpoint, status=status)
        log.info("refused a request on /%s: HTTP %d", endpoint, status)
        return _error(status, message)

    if request.content_type != JSON_CONTENT_TYPE:
        return bad(415, f"Content-Type must be {JSON_CONTENT_TYPE}")
    max_size = state.max_body_bytes
    if request.content_length is not None and request.content_length > max_size:
        return bad(413, f"request body larger than {max_size} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return bad(413, f"request body larger than {max_size} bytes")
    if not raw:
        return bad(400, "empty request body")

    try:
        body = decode_body(raw)
    except BadRequest as exc:
        return bad(exc.status, exc.message)

    started = time.perf_counter()
    try:
        outcome = state.review(body, endpoint=endpoint, config=state.config, bindings=state.bindings)
    except BadRequest as exc:
        return bad(exc.status, exc.message)
    except Exception as exc:
        error_id = _new_error_id()
        _log_internal_error("internal error", error_id, endpoint, exc)
        try:
            outcome = state.internal_error(body, endpoint=endpoint, error_id=error_id)
        except Exception as inner:
            _log_internal_error("internal error while answering internal error", error_id, endpoint, inner)
            return web.json_response(_last_resort_review(body, error_id))
    elapsed = time.perf_counter() - started
    try:
        answer = orjson.dumps(outcome.review)
    except orjson.JSONEncodeError as exc:  # a review handler that put a non-JSON value into its answer
        error_id = _new_error_id()
        _log_internal_error("cannot encode the answer", error_id, endpoint, exc)
        return web.json_response(_last_resort_review(body, error_id))

    try:
        state.audit.write(outcome.audit)
    except Exception as exc:
        # A failed audit write must not turn into a 500 the API server would act on; it is logged loudly.
        _log_internal_error("audit write failed", _new_error_id(), endpoint, exc)
    state.metrics.observe_review(
        endpoint=endpoint,
        decision=outcome.decision,
        rules=outcome.rules,
        seconds=elapsed,
        dry_run=outcome.dry_run,
    )
    return web.Response(body=answer, content_type=JSON_CONTENT_TYPE)


async def _mutate(request: web.Request) -> web.Response:
    return await _review(request, "mutate")


async def _validate(request: web.Request) -> web.Response:
    return await _review(request, "validate")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[STATE].bindings.ready:
        return web.json_response({"status": "ready"})
    return web.json_response(
        {"status": "not ready", "reason": "namespace bindings not synced yet"}, status=503
    )


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def _merged_exposition(metrics_dir: Path) -> Callable[[], bytes]:
    """/metrics of every worker summed, read from the multiprocess folder on each scrape."""
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]  # untyped upstream
    return lambda: generate_latest(registry)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tracked(handler: Handler, pid: str) -> Handler:
    """``handler`` as served: counted for the shutdown drain, and named by the process that answered.

    While draining, it answers with Connection: close so that clients take their next request to another
    replica instead of this keep-alive connection. A wrapper per route rather than a middleware: aiohttp
    builds the middleware chain anew for every request, about 3% of a review's CPU for two of them.
    """

    async def tracked(request: web.Request) -> web.StreamResponse:
        tracker = request.app[IN_FLIGHT]
        tracker.in_progress += 1
        tracker.started += 1
        try:
            response = await handler(request)
        finally:
            tracker.in_progress -= 1
        if tracker.draining:
            response.force_close()
        response.headers[PID_HEADER] = pid
        return response

    return tracked


async def _not_found(_request: web.Request) -> web.Response:
    return _error(404, "Not Found")


def _method_not_allowed(allowed: str) -> Handler:
    async def refuse(_request: web.Request) -> web.Response:
        return _error(405, "Method Not Allowed", {"Allow": allowed})

    return refuse


async def _drain(tracker: _InFlight, timeout: float) -> None:
    """Serve on (the listener is already closed) until requests have stopped, at most ``timeout``.

    aiohttp's own shutdown (runner.cleanup) stops reading from every connection at once: a review whose
    body was still arriving, or already received but not yet dispatched, would be dropped without an
    answer, and the API server would count a failed call (failurePolicy Fail: a refused pod).
    """
    tracker.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen, quiet_since = tracker.started, loop.time()
    while loop.time() < deadline:
        if tracker.in_progress or tracker.started != seen:
            seen, quiet_since = tracker.started, loop.time()
        elif loop.time() - quiet_since >= DRAIN_QUIET_SECONDS:
            return
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    log.warning("shutdown: %d request(s) still in progress after %gs", tracker.in_progress, timeout)


def make_app(
    settings: ServerSettings,
    config: Config,
    bindings: BindingSource,
    *,
    audit_stream: TextIO | None = None,
    registry: CollectorRegistry | None = None,
    review_handler: ReviewHandler = handle_review,
    internal_error_handler: InternalErrorHandler = internal_error_outcome,
    cert_reloader: CertReloader | None = None,
    namespace_cache: NamespaceCache | None = None,
) -> web.Application:
    """The aiohttp application; background work (certificate reloader, namespace cache) in cleanup_ctx."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[IN_FLIGHT] = _InFlight()
    metrics = Metrics(registry)
    app[STATE] = _State(
        config=config,
        bindings=bindings,
        audit=AuditWriter(audit_stream if audit_stream is not None else sys.stdout),
        metrics=metrics,
        review=review_handler,
        internal_error=internal_error_handler,
        max_body_bytes=settings.max_body_bytes,
        exposition=(
            metrics.exposition if settings.metrics_dir is None else _merged_exposition(settings.metrics_dir)
        ),
    )
    pid = str(os.getpid())  # make_app runs in the process that serves (each worker makes its own)
    for path, handler in (("/" + ENDPOINT_MUTATE, _mutate), ("/" + ENDPOINT_VALIDATE, _validate)):
        app.router.add_post(path, _tracked(handler, pid))
        app.router.add_route("*", path, _tracked(_method_not_allowed("POST"), pid))
    for path, handler in (("/healthz", _healthz), ("/readyz", _readyz), ("/metrics", _metrics)):
        app.router.add_get(path, _tracked(handler, pid))  # and HEAD
        app.router.add_route("*", path, _tracked(_method_not_allowed("GET,HEAD"), pid))
    # Our routes answer every method; whatever else is asked for is a JSON 404 like our other errors.
    app.router.add_route("*", "/{anything:.*}", _tracked(_not_found, pid))

    if cert_reloader is not None:
        reloader, interval = cert_reloader, settings.tls_reload_seconds

        async def reload_certificates(_app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(reloader.run(interval), name="tls-reloader")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        app.cleanup_ctx.append(reload_certificates)

    if namespace_cache is not None:
        cache, stop_seconds = namespace_cache, settings.namespace_cache_stop_seconds

        async def watch_namespaces(_app: web.Application) -> AsyncIterator[None]:
            cache.start()
            try:
                yield
            finally:
                await asyncio.to_thread(cache.stop, stop_seconds)

        app.cleanup_ctx.append(watch_namespaces)
    return app


@contextlib.contextmanager
def _certificate_files(settings: ServerSettings) -> Iterator[tuple[Path, Path]]:
    """The configured pair, or a self-signed one generated into a private temporary folder (gone at exit)."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        yield settings.tls_cert, settings.tls_key
        return
    with tempfile.TemporaryDirectory(prefix="gtc-admission-tls-") as tmp:  # mkdtemp: mode 0700
        paths = write_certificates(generate_certificates(LOCAL_DNS_NAMES, LOCAL_IP_ADDRESSES), Path(tmp))
        log.info(
            "no --tls-cert/--tls-key given: serving a self-signed certificate for %s; CA certificate: %s",
            ", ".join((*LOCAL_DNS_NAMES, *LOCAL_IP_ADDRESSES)),
            paths.ca_cert,
        )
        yield paths.cert, paths.key


def _bindings_for(settings: ServerSettings, config: Config) -> tuple[BindingSource, NamespaceCache | None]:
    static = StaticBindings(config.namespaces)
    if settings.cluster is None:
        log.info("namespace bindings: the config file's only (no cluster credentials); ready at once")
        return static, None
    try:
        api = KubernetesNamespaceApi.from_credentials(settings.cluster)
    except Exception as exc:
        raise StartupError(f"cannot use cluster credentials ({settings.cluster.describe()}): {exc}") from None
    log.info("namespace bindings: the config file's, then namespace labels (%s)", settings.cluster.describe())
    cache = NamespaceCache(api)
    return LayeredBindings([static, cache]), cache


async def serve(
    settings: ServerSettings,
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``): stop accepting, let in-flight reviews finish, clean up.

    A worker of ``run_workers`` (``settings.supervisor_pid`` set) stops on SIGTERM only (its supervisor turns
    SIGINT into SIGTERM for every worker) and when its supervisor is gone.
    """
    stop = stop or asyncio.Event()
    if settings.metrics_dir is not None and os.environ.get(ENV_PROMETHEUS_MULTIPROC_DIR) != str(
        settings.metrics_dir
    ):
        # Without it prometheus_client keeps values in this process only, and /metrics would merge nothing.
        raise StartupError(f"{ENV_PROMETHEUS_MULTIPROC_DIR} must be {settings.metrics_dir} in a worker")
    with _certificate_files(settings) as (cert, key):
        try:
            reloader = CertReloader(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
        bindings, cache = _bindings_for(settings, config)
        app = make_app(settings, config, bindings, cert_reloader=reloader, namespace_cache=cache)
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_seconds, access_log=None
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        signals: tuple[signal.Signals, ...] = ()
        if install_signal_handlers:
            signals = (signal.SIGTERM,) if settings.supervisor_pid else (signal.SIGTERM, signal.SIGINT)
        watcher: asyncio.Task[None] | None = None
        try:
            site = web.TCPSite(
                runner,
                settings.host,
                settings.port,
                ssl_context=reloader.context,
                reuse_port=settings.reuse_port,
            )
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
                ) from None
            for sig in signals:
                loop.add_signal_handler(sig, stop.set)
            if settings.supervisor_pid is not None:
                watcher = asyncio.create_task(_watch_supervisor(settings.supervisor_pid, stop))
            log.info("listening on https://%s:%d", settings.host, settings.port)
            await stop.wait()
            log.info("shutting down: no new connections, finishing reviews in flight")
            await site.stop()  # the listener closes: new connections are refused from here on
            await _drain(app[IN_FLIGHT], settings.shutdown_timeout_seconds)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            for sig in signals:
                loop.remove_signal_handler(sig)
            await runner.cleanup()
        log.info("stopped")


async def _watch_supervisor(supervisor_pid: int, stop: asyncio.Event) -> None:
    """Stop when the supervisor is gone (killed with SIGKILL, it could not forward a signal): no orphans.

    A process whose parent died is re-parented, so its parent pid changes; polled because no signal says so
    portably (PR_SET_PDEATHSIG is Linux only).
    """
    while os.getppid() == supervisor_pid:
        await asyncio.sleep(SUPERVISOR_POLL_SECONDS)
    log.error("the supervising process %d is gone: stopping this worker", supervisor_pid)
    stop.set()


# --- serve --workers N ------------------------------------------------------------------------------------

# A worker's main: settings and config in, exit code out (the CLI's, so a worker that cannot start exits 2).
WorkerMain = Callable[[ServerSettings, Config], int]


def check_address_free(host: str, port: int) -> None:
    """StartupError if ``host:port`` is in use, also by a server that shares it with SO_REUSEPORT.

    The workers bind with SO_REUSEPORT, which would let them join another server's port without an error
    (the kernel would then split connections between the two); a bind without it fails if anyone listens.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _name, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as probe:
            # As asyncio does for the real listener: a port in TIME_WAIT is not in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _worker_process(main: WorkerMain, settings: ServerSettings, config: Config) -> None:
    """Entry point of a spawned worker: SIGINT is the supervisor's to handle (it sends SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(main(settings, config))


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment while the workers are spawned (they inherit it)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def _failure_code(exitcode: int) -> int:
    """The supervisor's exit code for a worker that failed: its own, or 1 if a signal killed it."""
    return exitcode if exitcode > 0 else 1


def run_workers(settings: ServerSettings, config: Config, workers: int, main: WorkerMain) -> int:
    """``serve --workers N``: run ``main`` in ``workers`` spawned processes sharing the port; the exit code.

    Checked here, once, so that a mistake is reported like with one process: the address (in use, even by a
    SO_REUSEPORT server) and the certificate pair; without one, a single self-signed pair is generated for
    every worker (each generating its own would serve several CAs behind one port). SIGTERM/SIGINT are
    forwarded to every worker as SIGTERM; 0 when they all stopped cleanly. A worker that exits on its own
    (crash, kill, cannot start) stops the others: its exit code is returned (1 if a signal killed it).
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be 1 to {MAX_WORKERS}, not {workers}")
    check_address_free(settings.host, settings.port)
    with (
        _certificate_files(settings) as (cert, key),
        tempfile.TemporaryDirectory(prefix="gtc-admission-metrics-") as metrics_dir,
    ):
        try:
            CertReloader(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
        worker_settings = replace(
            settings,
            tls_cert=cert,
            tls_key=key,
            reuse_port=True,
            metrics_dir=Path(metrics_dir),
            supervisor_pid=os.getpid(),
        )
        return _supervise(worker_settings, config, workers, main)


def _supervise(settings: ServerSettings, config: Config, workers: int, main: WorkerMain) -> int:
    # spawn, not fork: a fresh interpreter per worker inherits no lock, thread or event loop state, and
    # imports prometheus_client with the multiprocess folder already in its environment.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker_process, args=(main, settings, config), name=f"gtc-admission-worker-{index}"
        )
        for index in range(workers)
    ]
    stopping = False

    def stop_workers() -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping:
            log.info("%s: stopping %d worker(s)", signal.Signals(signum).name, workers)
        stop_workers()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _environment(ENV_PROMETHEUS_MULTIPROC_DIR, str(settings.metrics_dir)):
            for process in processes:
                if not stopping:
                    process.start()
        running = [process for process in processes if process.pid is not None]
        log.info(
            "serving https://%s:%d with %d worker processes (pids %s)",
            settings.host,
            settings.port,
            len(running),
            ", ".join(str(process.pid) for process in running),
        )
        code = 0
        kill_at: float | None = None
        while running:
            # Bounded, so that a stop requested by a signal is acted on even while nobody exits.
            multiprocessing.connection.wait([process.sentinel for process in running], timeout=0.5)
            for process in [p for p in running if p.exitcode is not None]:
                process.join()
                running.remove(process)
                exitcode = process.exitcode
                assert exitcode is not None  # joined
                if not stopping:
                    log.error(
                        "worker %s (pid %d) exited on its own with %d: stopping the others",
                        process.name,
                        process.pid,
                        exitcode,
                    )
                    code = _failure_code(exitcode)
                    stop_workers()
                elif exitcode not in (0, -signal.SIGTERM) and code == 0:
                    log.error("worker %s (pid %d) stopped with %d", process.name, process.pid, exitcode)
                    code = _failure_code(exitcode)
            if stopping and kill_at is None:
                # A worker drains for up to the shutdown timeout, then aiohttp's cleanup may take it again.
                stop_budget = 2 * settings.shutdown_timeout_seconds + WORKER_KILL_GRACE_SECONDS
                kill_at = time.monotonic() + stop_budget
            if kill_at is not None and time.monotonic() > kill_at:
                for process in running:
                    log.error("worker %s (pid %d) did not stop in time: killed", process.name, process.pid)
                    process.kill()
                kill_at = float("inf")
                code = code or 1
        log.info("all workers stopped")
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in processes:
            if process.pid is not None and process.exitcode is None:  # only after an exception here
                process.kill()
                process.join()
