"""The HTTPS server: the edge between the API server and the pure decision core.

The server reads the body, checks what is about the *request* (content type, size, JSON), hands the
decoded review to ``handle_review`` and turns the result into HTTP. Request errors become a 4xx with a JSON
body ``{"error": ...}``; anything the core raises unexpectedly becomes a well-formed denial (fail closed)
with an error id in the log, never a 500. Every decision is written to the audit stream and counted.

Endpoints: ``POST /mutate``, ``POST /validate``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

from aiohttp import web
from prometheus_client import CollectorRegistry

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


STATE: Final = web.AppKey("state", _State)


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
    return web.json_response(outcome.review)


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
    body = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 4xx (unknown path, wrong method) get a JSON body like ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if 400 <= exc.status < 500:
            headers = {
                k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
            }
            return _error(exc.status, exc.reason, headers)
        raise


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
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_json_errors])
    app[STATE] = _State(
        config=config,
        bindings=bindings,
        audit=AuditWriter(audit_stream if audit_stream is not None else sys.stdout),
        metrics=Metrics(registry),
        review=review_handler,
        internal_error=internal_error_handler,
        max_body_bytes=settings.max_body_bytes,
    )
    app.router.add_post("/" + ENDPOINT_MUTATE, _mutate)
    app.router.add_post("/" + ENDPOINT_VALIDATE, _validate)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)

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
    """Serve until SIGTERM/SIGINT (or ``stop``): stop accepting, let in-flight reviews finish, clean up."""
    stop = stop or asyncio.Event()
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
        signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
        try:
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=reloader.context)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
                ) from None
            for sig in signals:
                loop.add_signal_handler(sig, stop.set)
            log.info("listening on https://%s:%d", settings.host, settings.port)
            await stop.wait()
            log.info("shutting down: no new connections, finishing reviews in flight")
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await runner.cleanup()
        log.info("stopped")
