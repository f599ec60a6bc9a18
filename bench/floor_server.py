"""The floor of our stack: a bare aiohttp HTTPS server that answers every POST with a fixed allowed review.

Same Python, same aiohttp, same TLS settings (TLS >= 1.2, the same certificate) and the same keep-alive
behaviour as ``gtc-admission serve``, but no decoding, no decision, no audit line, no metrics: whatever
``gtc-admission`` costs above this is ours. It still reads the whole body, as any server must.

    python -m bench.floor_server --port 9443 --tls-cert tls.crt --tls-key tls.key
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from aiohttp import web

ALLOWED_REVIEW: Final = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "bench-floor", "allowed": True},
    },
    separators=(",", ":"),
).encode()


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ALLOWED_REVIEW, content_type="application/json")


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/mutate", _answer)
    app.router.add_post("/validate", _answer)
    app.router.add_get("/healthz", _healthz)
    return app


async def serve(host: str, port: int, cert: Path, key: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port, ssl_context=context).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.floor_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.tls_cert, args.tls_key))


if __name__ == "__main__":
    main()
