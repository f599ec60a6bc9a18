"""The demo worker: settings, the secret check, its HTTP answers, and a real boot through gtc-secrets exec."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gtc_secrets import demo_worker as dw
from tests.support.processes import stop_process

CANARY = "CANARY-3d9b7e21-demo-worker-secret"
WRONG = "WRONG-a7c4e0f2-presented-value"

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def settings(secret: str = CANARY) -> dw.DemoWorkerSettings:
    return dw.DemoWorkerSettings.from_environ({dw.ENV_WEBHOOK_SECRET: secret})


# --- settings ---------------------------------------------------------------------------------------


def test_settings_read_the_secret_and_defaults() -> None:
    """The secret, port 8080 and all interfaces by default."""
    s = settings()
    assert (s.webhook_secret, s.host, s.port) == (CANARY.encode(), "0.0.0.0", 8080)


def test_settings_repr_hides_the_secret() -> None:
    """The settings' repr never shows the secret."""
    assert CANARY not in repr(settings())


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({}, "WEBHOOK_SECRET is not set"),
        ({"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET is not set"),
        ({"WEBHOOK_SECRET": "secret://webhook/inbound"}, "still a secret:// reference"),
        ({"WEBHOOK_SECRET": "x", "DEMO_WORKER_PORT": "http"}, "DEMO_WORKER_PORT='http' is not a port"),
        ({"WEBHOOK_SECRET": "x", "DEMO_WORKER_PORT": "0"}, "out of range"),
        ({"WEBHOOK_SECRET": "x", "DEMO_WORKER_PORT": "65536"}, "out of range"),
    ],
)
def test_settings_refusals_name_the_variable(environ: dict[str, str], fragment: str) -> None:
    """Missing secret, an unresolved reference, a bad port: refused with the variable named."""
    with pytest.raises(dw.SettingsError, match=fragment):
        dw.DemoWorkerSettings.from_environ(environ)


def test_settings_host_and_port_from_env() -> None:
    """DEMO_WORKER_HOST and DEMO_WORKER_PORT override the defaults."""
    s = dw.DemoWorkerSettings.from_environ(
        {dw.ENV_WEBHOOK_SECRET: CANARY, dw.ENV_HOST: "127.0.0.1", dw.ENV_PORT: "9000"}
    )
    assert (s.host, s.port) == ("127.0.0.1", 9000)


# --- the secret check (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        (CANARY, True),
        (None, False),
        ("", False),
        (CANARY[:-1], False),  # a prefix
        (CANARY + "x", False),  # an extension
        (CANARY[:-1] + "X", False),  # same length, last byte differs
        (CANARY.lower(), False),
        (" " + CANARY, False),
    ],
)
def test_is_authorized(presented: str | None, expected: bool) -> None:
    """Only the exact secret passes."""
    assert dw.is_authorized(presented, dw._digest(CANARY.encode())) is expected


# --- HTTP -------------------------------------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(dw.make_app(settings()))


async def test_hook_with_the_right_secret_is_200(client: TestClient[web.Request, web.Application]) -> None:
    """POST /hook with the secret in X-Webhook-Secret: 200."""
    resp = await client.post("/hook", json={"event": "ping"}, headers={dw.HEADER_WEBHOOK_SECRET: CANARY})
    assert resp.status == 200
    assert await resp.json() == {"status": "accepted"}


@pytest.mark.parametrize(
    "headers",
    [{}, {dw.HEADER_WEBHOOK_SECRET: WRONG}, {dw.HEADER_WEBHOOK_SECRET: ""}, {"Authorization": CANARY}],
)
async def test_hook_without_the_right_secret_is_401(
    client: TestClient[web.Request, web.Application], headers: dict[str, str]
) -> None:
    """Missing, wrong, empty, or in another header: 401, and the answer echoes nothing."""
    resp = await client.post("/hook", data=b"{}", headers=headers)
    assert resp.status == 401
    text = await resp.text()
    assert json.loads(text) == {"error": "unauthorized"}
    assert CANARY not in text and WRONG not in text


async def test_healthz(client: TestClient[web.Request, web.Application]) -> None:
    """GET /healthz: 200."""
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_get_hook_is_405(client: TestClient[web.Request, web.Application]) -> None:
    """Only POST reaches the hook."""
    resp = await client.get("/hook", headers={dw.HEADER_WEBHOOK_SECRET: CANARY})
    assert resp.status == 405


async def test_oversized_body_is_413(client: TestClient[web.Request, web.Application]) -> None:
    """A body over 64 KiB is refused."""
    resp = await client.post(
        "/hook", data=b"x" * (dw.MAX_BODY_BYTES + 1), headers={dw.HEADER_WEBHOOK_SECRET: CANARY}
    )
    assert resp.status == 413


async def test_neither_secret_nor_presented_value_is_logged(
    client: TestClient[web.Request, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted and refused calls are logged without the secret or the value presented."""
    caplog.set_level(logging.DEBUG)
    ok = await client.post("/hook", data=b"{}", headers={dw.HEADER_WEBHOOK_SECRET: CANARY})
    bad = await client.post("/hook", data=b"{}", headers={dw.HEADER_WEBHOOK_SECRET: WRONG})
    assert (ok.status, bad.status) == (200, 401)
    assert "accepted" in caplog.text and "refused" in caplog.text
    assert CANARY not in caplog.text and WRONG not in caplog.text


# --- main ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "secret://webhook/inbound"])
def test_main_refuses_to_start_without_the_secret(
    value: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """No secret (or an unresolved reference): exit 3, the variable named."""
    environ = {} if value is None else {dw.ENV_WEBHOOK_SECRET: value}
    assert dw.main(environ) == dw.EXIT_CONFIG
    assert "refusing to start" in caplog.text and dw.ENV_WEBHOOK_SECRET in caplog.text


# --- a real boot: gtc-secrets exec -> python -m gtc_secrets.demo_worker (the image's entrypoint) ---------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, secret: str) -> int:
    request = urllib.request.Request(
        url, data=b"{}", method="POST", headers={dw.HEADER_WEBHOOK_SECRET: secret}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


@contextmanager
def running(command: list[str], env: dict[str, str], log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop_process(process, timeout=10)


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the worker exited with {process.returncode}: {log_file.read_text()}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the worker did not answer /healthz in time: {log_file.read_text()}")


def test_boots_through_gtc_secrets_exec(tmp_path: Path) -> None:
    """The image's command line, with the dev-store backend: the reference resolves, 200 / 401."""
    store = tmp_path / "dev.secrets"
    store.write_text(json.dumps({"prod/acme/core/webhook/inbound": CANARY}))
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GREENTIC_SECRETS_BACKEND": "dev-store",
        "GREENTIC_DEV_SECRETS_FILE": str(store),
        "GREENTIC_ENV": "prod",
        "GREENTIC_TENANT": "acme",
        "GREENTIC_TEAM": "core",
        dw.ENV_WEBHOOK_SECRET: "secret://webhook/inbound",
        dw.ENV_HOST: "127.0.0.1",
        dw.ENV_PORT: str(port),
    }
    gtc_secrets = str(Path(sys.executable).parent / "gtc-secrets")
    command = [gtc_secrets, "exec", "--", sys.executable, "-m", "gtc_secrets.demo_worker"]
    log_file = tmp_path / "worker.log"
    base = f"http://127.0.0.1:{port}"
    with running(command, env, log_file) as process:
        _wait_healthy(base, process, log_file)
        assert _post(base + "/hook", CANARY) == 200
        assert _post(base + "/hook", WRONG) == 401
    assert process.returncode == 0  # SIGTERM: a clean shutdown
    output = log_file.read_text()
    assert "listening on http://127.0.0.1" in output
    assert CANARY not in output and WRONG not in output


def test_refuses_to_start_when_run_without_exec(tmp_path: Path) -> None:
    """Started directly, the reference is unresolved: exit 3 and no server."""
    env = {"PATH": os.environ.get("PATH", ""), dw.ENV_WEBHOOK_SECRET: "secret://webhook/inbound"}
    result = subprocess.run(
        [sys.executable, "-m", "gtc_secrets.demo_worker"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == dw.EXIT_CONFIG
    assert b"still a secret:// reference" in result.stderr
