"""Run the real ``gtc-admission serve`` as a subprocess on 127.0.0.1 and talk to it over real TLS.

Used by the webhook integration tests and by the README worked-example test. ``running_webhook`` always
stops the process (SIGTERM, then SIGKILL) in ``finally``; its stdout (audit lines) and stderr (logs) are
kept in files so tests can read them and failures can show them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "deploy" / "webhook" / "config.yaml"
# The console script `make run` uses, from the same virtual environment as the tests.
GTC_ADMISSION = Path(sys.executable).with_name("gtc-admission")
CA_LOG_MARKER = "CA certificate: "
# Variables that would make the server watch a real cluster; the tests use static bindings only.
CLUSTER_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpResult:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookProcess:
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    stdout_file: Path
    stderr_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_file.read_text(errors="replace")

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout().splitlines() if line.strip()]

    def tls_context(self, ca_file: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca_file or self.ca_file))

    def connection(self, context: ssl.SSLContext | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context or self.tls_context(), timeout=10
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str | None = "application/json",
        connection: http.client.HTTPSConnection | None = None,
        context: ssl.SSLContext | None = None,
    ) -> HttpResult:
        """One request on ``connection`` (left open), or on a new one (with ``context``), closed after."""
        conn = connection or self.connection(context)
        try:
            headers = {"Content-Type": content_type} if content_type is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return HttpResult(response.status, dict(response.getheaders()), response.read())
        finally:
            if connection is None:
                conn.close()

    def post_json(self, path: str, document: object) -> HttpResult:
        return self.request("POST", path, json.dumps(document).encode())

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        return stop_process(self.process, timeout=timeout)


def _wait_ready(webhook: WebhookProcess, find_ca: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if webhook.process.poll() is not None:
            raise RuntimeError(
                f"gtc-admission exited with {webhook.process.returncode}:\n{webhook.stderr()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"gtc-admission did not become healthy:\n{webhook.stderr()[-3000:]}")
        if find_ca:
            for line in webhook.stderr().splitlines():
                if CA_LOG_MARKER in line:
                    webhook.ca_file = Path(line.rsplit(CA_LOG_MARKER, 1)[1].strip())
                    find_ca = False
        if not find_ca:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if webhook.request("GET", "/healthz", content_type=None).status == 200:
                    return
        time.sleep(0.05)


@contextlib.contextmanager
def running_webhook(
    workdir: Path,
    *,
    config: Path = EXAMPLE_CONFIG,
    tls: tuple[Path, Path] | None = None,
    ca_file: Path | None = None,
    extra_args: Sequence[str] = (),
    serve_args: Sequence[str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[WebhookProcess]:
    """Start ``gtc-admission serve`` on a free port; with ``tls`` the given pair (and its ``ca_file``),
    without it the self-signed certificate the server generates (its CA path is read from the log).

    ``serve_args`` replaces every argument after ``serve`` (``{port}`` in them becomes the free port).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if serve_args is not None:
        args = [str(GTC_ADMISSION), "serve", *(a.replace("{port}", str(port)) for a in serve_args)]
    else:
        args = [
            str(GTC_ADMISSION),
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    if tls is not None:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    args += list(extra_args)
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    stdout_file, stderr_file = workdir / "stdout.log", workdir / "stderr.log"
    with stdout_file.open("wb") as out, stderr_file.open("wb") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    webhook = WebhookProcess(process, port, ca_file or Path("/nonexistent"), stdout_file, stderr_file)
    try:
        _wait_ready(webhook, find_ca=tls is None, timeout=ready_timeout)
        yield webhook
    finally:
        webhook.stop()
