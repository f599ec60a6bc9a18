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
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from gtc_secrets import demo_worker as dw
from tests.support.processes import stop_process
from tests.support.service_links import container_environment, link_variables, master_service, services_in

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLE = DEPLOY / "examples" / "acme-prod"

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
        ({"WEBHOOK_SECRET": "x", dw.ENV_PORT: "http"}, f"{dw.ENV_PORT}='http' is not a port"),
        ({"WEBHOOK_SECRET": "x", dw.ENV_PORT: "0"}, "out of range"),
        ({"WEBHOOK_SECRET": "x", dw.ENV_PORT: "65536"}, "out of range"),
    ],
)
def test_settings_refusals_name_the_variable(environ: dict[str, str], fragment: str) -> None:
    """Missing secret, an unresolved reference, a bad port: refused with the variable named."""
    with pytest.raises(dw.SettingsError, match=fragment):
        dw.DemoWorkerSettings.from_environ(environ)


def test_settings_host_and_port_from_env() -> None:
    """DEMO_WORKER_HOST and DEMO_WORKER_PORT_NUMBER override the defaults."""
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


def _dev_store_environ(tmp_path: Path) -> dict[str, str]:
    """What the webhook and the image give the worker, with the dev-store backend in place of Vault."""
    store = tmp_path / "dev.secrets"
    store.write_text(json.dumps({"prod/acme/core/webhook/inbound": CANARY}))
    return {
        "PATH": os.environ.get("PATH", ""),
        "GREENTIC_SECRETS_BACKEND": "dev-store",
        "GREENTIC_DEV_SECRETS_FILE": str(store),
        "GREENTIC_ENV": "prod",
        "GREENTIC_TENANT": "acme",
        "GREENTIC_TEAM": "core",
    }


def _boot_and_check(tmp_path: Path, env: dict[str, str], port: int) -> None:
    """Start the image's command line with ``env``: the reference resolves, /hook answers 200 / 401."""
    gtc_secrets = str(Path(sys.executable).parent / "gtc-secrets")
    command = [gtc_secrets, "exec", "--watch", "1m", "--", sys.executable, "-m", "gtc_secrets.demo_worker"]
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


def test_boots_through_gtc_secrets_exec(tmp_path: Path) -> None:
    """The image's command line, with the dev-store backend: the reference resolves, 200 / 401."""
    port = _free_port()
    env = {
        **_dev_store_environ(tmp_path),
        dw.ENV_WEBHOOK_SECRET: "secret://webhook/inbound",
        dw.ENV_HOST: "127.0.0.1",
        dw.ENV_PORT: str(port),
    }
    _boot_and_check(tmp_path, env, port)


def _manifests(*folders: Path) -> list[dict[str, Any]]:
    return [
        doc
        for folder in folders
        for path in sorted(folder.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_boots_with_the_service_links_of_the_example(tmp_path: Path) -> None:
    """Started as the kubelet starts it beside the example's Services (and Vault's, the webhook's and
    ``kubernetes``), with service links on: it ignores them, resolves its secret and serves (issue 10)."""
    objects = _manifests(EXAMPLE, DEPLOY / "vault", DEPLOY / "webhook")
    services = [*services_in(objects), master_service()]
    assert {"demo-worker", "vault", "gtc-admission"} <= {service.name for service in services}
    links = link_variables(services)
    (worker,) = [
        o for o in objects if o.get("kind") == "Deployment" and o["metadata"]["name"] == "demo-worker"
    ]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    manifest_env = {str(e["name"]): str(e["value"]) for e in container["env"]}
    port = _free_port()
    # In a cluster the worker listens on its default address; here it needs a free port on loopback. That
    # setting (and the dev store in place of the webhook's Vault settings) goes UNDER the link variables,
    # so that it can never hide one: with a variable of a link's name, the link's value is what it reads.
    test_settings = {**_dev_store_environ(tmp_path), dw.ENV_HOST: "127.0.0.1", dw.ENV_PORT: str(port)}
    env = container_environment({**test_settings, **links}, manifest_env)
    _boot_and_check(tmp_path, env, port)


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
