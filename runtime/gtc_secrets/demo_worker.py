"""The demo worker: a tiny HTTP service that needs one secret, for the demo image and the kind suite.

It shows the runtime from a worker's side. The manifest sets ``WEBHOOK_SECRET=secret://webhook/inbound``;
the image boots it through ``gtc-secrets exec -- python -m gtc_secrets.demo_worker``, so by the time this
module runs the variable holds the value fetched from Vault. It refuses to start without that value (or
with the reference still unresolved), and answers an inbound webhook call with 200 when the caller
presents the secret in the ``X-Webhook-Secret`` header and 401 otherwise.

The secret is never logged, never echoed, and compared in constant time (over SHA-256 digests, so that
not even its length shows in the timing).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

log = logging.getLogger(__name__)

ENV_WEBHOOK_SECRET: Final = "WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a password
# Never a name the kubelet generates for a Service (<NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT[_<PORT NAME>],
# <NAME>_PORT, <NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]): a pod gets those for every Service of its
# namespace, so DEMO_WORKER_PORT was `tcp://<cluster IP>:80` wherever a Service `demo-worker` exists and the
# worker refused to start (issue 10). tests/unit/test_service_links.py checks every variable read here.
ENV_HOST: Final = "DEMO_WORKER_HOST"
ENV_PORT: Final = "DEMO_WORKER_PORT_NUMBER"
ENV_LOG_LEVEL: Final = "DEMO_WORKER_LOG_LEVEL"
HEADER_WEBHOOK_SECRET: Final = "X-Webhook-Secret"  # noqa: S105 - a header name, not a password
REFERENCE_SCHEME: Final = "secret://"

DEFAULT_HOST: Final = "0.0.0.0"  # noqa: S104 - a pod's server listens on its pod IP
DEFAULT_PORT: Final = 8080
# An inbound webhook payload is small; anything bigger is refused before the handler runs.
MAX_BODY_BYTES: Final = 64 * 1024

EXIT_CONFIG: Final = 3  # same meaning as gtc-secrets' exit 3: a configuration error

_SECRET_DIGEST: Final = web.AppKey("secret_digest", bytes)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable, never its value."""


@dataclass(frozen=True)
class DemoWorkerSettings:
    """Read once in main. The secret is kept out of the repr."""

    webhook_secret: bytes = field(repr=False)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DemoWorkerSettings:
        value = environ.get(ENV_WEBHOOK_SECRET, "")
        if not value:
            raise SettingsError(
                f"{ENV_WEBHOOK_SECRET} is not set: this worker needs its inbound webhook secret "
                f"(e.g. {ENV_WEBHOOK_SECRET}=secret://webhook/inbound, resolved by gtc-secrets exec)"
            )
        if value.startswith(REFERENCE_SCHEME):
            # The reference itself is not secret, but a worker must never run on an unresolved one.
            raise SettingsError(
                f"{ENV_WEBHOOK_SECRET} is still a secret:// reference: start this worker through "
                "`gtc-secrets exec -- python -m gtc_secrets.demo_worker`"
            )
        return cls(
            webhook_secret=value.encode("utf-8"),
            host=environ.get(ENV_HOST) or DEFAULT_HOST,
            port=parse_port(environ.get(ENV_PORT)),
        )


def parse_port(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{ENV_PORT}={value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise SettingsError(f"{ENV_PORT}={value!r} is out of range 1-65535")
    return port


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def is_authorized(presented: str | None, secret_digest: bytes) -> bool:
    """True when the presented header value is the secret (constant time, length hidden by the digest)."""
    if presented is None:
        return False
    return hmac.compare_digest(_digest(presented.encode("utf-8", "surrogateescape")), secret_digest)


async def _hook(request: web.Request) -> web.Response:
    if not is_authorized(request.headers.get(HEADER_WEBHOOK_SECRET), request.app[_SECRET_DIGEST]):
        # Neither the presented value nor its length: only that it did not match.
        log.warning("inbound webhook refused: missing or wrong %s header", HEADER_WEBHOOK_SECRET)
        return web.json_response({"error": "unauthorized"}, status=401)
    body = await request.read()
    log.info("inbound webhook accepted (%d bytes)", len(body))
    return web.json_response({"status": "accepted"})


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(settings: DemoWorkerSettings) -> web.Application:
    """The worker's HTTP app: POST /hook, GET /healthz."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    # Only the digest is kept in the app: the raw value is needed nowhere else.
    app[_SECRET_DIGEST] = _digest(settings.webhook_secret)
    app.router.add_post("/hook", _hook)
    app.router.add_get("/healthz", _healthz)
    return app


def configure_logging(environ: Mapping[str, str]) -> None:
    level = environ.get(ENV_LOG_LEVEL, "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="demo-worker: %(levelname)s %(name)s: %(message)s",
    )


def main(environ: Mapping[str, str] | None = None) -> int:
    """Read the settings, then serve until SIGTERM/SIGINT; exit 3 when the secret is missing."""
    env = os.environ if environ is None else environ
    configure_logging(env)
    try:
        settings = DemoWorkerSettings.from_environ(env)
    except SettingsError as exc:
        log.error("refusing to start: %s", exc)
        return EXIT_CONFIG
    log.info("listening on http://%s:%d (POST /hook, GET /healthz)", settings.host, settings.port)
    web.run_app(make_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
