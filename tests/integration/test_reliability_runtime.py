"""Reliability of the worker runtime against a real OpenBao: Vault restarted mid-run, Vault sealed at boot.

What the other integration tests already show is not repeated here: Vault *stopped* at boot (bounded
retries, exit 4: test_exec.py), sealed at boot *then unsealed* (test_runtime_vault.py), token expiry and
revocation on a running Vault (test_runtime_vault.py). Added here:

- a long-lived worker client keeps resolving while Vault is restarted under it: resolutions that meet the
  restart wait (bounded retries) instead of failing, the client logs in again when its token has to be
  replaced, and every value is right before, during and after;
- Vault sealed at boot and staying sealed: ``gtc-secrets exec`` and ``get`` (the real console script)
  retry for GREENTIC_SECRETS_BOOT_TIMEOUT, then exit 4 with a message that says Vault is sealed, start
  no child, and print no value.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from gtc_secrets.curl_transport import CurlTransport, TlsTrust
from gtc_secrets.refs import SecretRef
from gtc_secrets.resolve import Backoff, resolve_from_vault, retry_until
from gtc_secrets.vault import Method, Response, VaultPaths, WorkerVault
from tests.integration.conftest import Bootstrapped
from tests.integration.test_runtime_vault import acme, seed, short_role, worker_environ

pytestmark = pytest.mark.integration

CANARY: Final = "canary-rel-7c31e0-never-print-me"
GTC_SECRETS: Final = Path(sys.executable).parent / "gtc-secrets"
PATHS: Final = VaultPaths(
    k8s_mount="kubernetes", kv_mount="secret", kv_prefix="greentic", transit_mount="transit"
)
# Short, so that the token has to be replaced while the worker runs; Vault's minimum is 1 s.
TOKEN_TTL_SECONDS: Final = 3
RESOLVE_TIMEOUT: Final = 60.0
RUN_TIMEOUT: Final = 120
BOOT_TIMEOUT: Final = "2"
# The child of `exec`: writes a marker file; it must never run.
CHILD = "import sys; open(sys.argv[1], 'w').write('started')"


@dataclass(frozen=True)
class Call:
    at: float
    method: str
    path: str
    status: int | None  # None: Vault could not be reached


class TimedRecording:
    """A spy at the Transport seam: each call with its time and status (None when it raised)."""

    def __init__(self, inner: CurlTransport) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        try:
            response = await self.inner.request(method, path, token=token, payload=payload)
        except Exception:
            self.calls.append(Call(time.monotonic(), method, path, None))
            raise
        self.calls.append(Call(time.monotonic(), method, path, response.status))
        return response

    async def close(self) -> None:
        await self.inner.close()


class RetryLog(logging.Handler):
    """The boot loop's "retrying in" warnings, with their time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.times.append(time.monotonic())


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    handler = RetryLog()
    logger = logging.getLogger("gtc_secrets")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@dataclass(frozen=True)
class Resolution:
    started: float
    finished: float
    values: dict[SecretRef, bytes]


async def test_a_running_worker_keeps_resolving_through_a_vault_restart(
    bootstrapped: Bootstrapped, retry_log: RetryLog
) -> None:
    """One long-lived client resolving in a loop while openbao.restart() runs: no resolution fails, the
    ones that meet the restart retry until Vault is back, the client logs in again, all values right."""
    refs = [acme(f"restart{i}") for i in range(5)]
    expected = {ref: f"{CANARY}-{i}".encode() for i, ref in enumerate(refs)}
    for ref, value in expected.items():
        seed(bootstrapped, ref, value.decode())
    role = short_role(bootstrapped, ttl=TOKEN_TTL_SECONDS)
    transport = TimedRecording(
        CurlTransport(bootstrapped.openbao.addr, TlsTrust.for_ca_file(Path(bootstrapped.openbao.ca_file)))
    )
    vault = WorkerVault(transport, PATHS, role=role, token_path=bootstrapped.worker_token("acme-prod"))
    resolutions: list[Resolution] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            started = time.monotonic()
            values = await retry_until(
                lambda: resolve_from_vault(vault, refs),
                timeout=RESOLVE_TIMEOUT,
                what="resolving the restart test's references",
                backoff=Backoff(initial=0.05, cap=0.5),
            )
            resolutions.append(
                Resolution(started, time.monotonic(), {r: v.reveal_bytes() for r, v in values.items()})
            )
            await asyncio.sleep(0.02)  # a worker does other things between resolutions

    async def until(condition: Any, what: str, timeout: float = RESOLVE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert not task.done(), f"the worker stopped: {task.exception() if task.done() else ''}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    task = asyncio.create_task(worker())
    down_at = up_at = 0.0
    try:
        await until(lambda: len(resolutions) >= 3, "resolutions before the restart")
        logins_before = vault.logins
        down_at = time.monotonic()
        await asyncio.to_thread(bootstrapped.openbao.restart)
        up_at = time.monotonic()
        # Run on until the token issued before the restart is past its TTL: it must have been replaced.
        await until(
            lambda: (
                sum(1 for r in resolutions if r.started > up_at) >= 3
                and time.monotonic() > up_at + TOKEN_TTL_SECONDS + 1
            ),
            "resolutions after the restart",
        )
        stop.set()
        await asyncio.wait_for(task, RESOLVE_TIMEOUT)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await vault.close()
        if not bootstrapped.openbao.server.running:
            await asyncio.to_thread(bootstrapped.openbao.start)

    assert all(r.values == expected for r in resolutions), "a resolution returned wrong values"
    # The restart really happened under the worker: calls failed while Vault was down, and the boot
    # loop retried (in a resolution that started before Vault was back and finished after).
    unreachable = [c for c in transport.calls if c.status is None and down_at <= c.at <= up_at + 1]
    assert unreachable, "no call met the restart"
    assert any(down_at <= t <= up_at + RESOLVE_TIMEOUT for t in retry_log.times)
    # A resolution met the outage (a call of its own found Vault unreachable) and still finished. Not
    # "spans up_at": restart() returns only after its own health checks, and a retrying worker can be
    # done before that.
    assert any(any(r.started <= c.at <= r.finished for c in unreachable) for r in resolutions), (
        "no resolution waited for Vault"
    )
    # It logged in again after the restart, and resolved with the new token.
    assert vault.logins > logins_before
    relogins = [c for c in transport.calls if c.path == PATHS.login() and c.status == 200 and c.at > up_at]
    assert relogins
    assert any(
        c.path.startswith("transit/") and c.status == 200 and c.at > relogins[0].at for c in transport.calls
    )
    assert sum(1 for r in resolutions if r.started > up_at) >= 3
    print(
        f"restart: {up_at - down_at:.1f}s down, {len(resolutions)} resolutions, {len(unreachable)} calls "
        f"unreachable, {len(retry_log.times)} retries, logins {logins_before} -> {vault.logins}"
    )


# ---------------------------------------------------------------------------------------------
# Sealed at boot and staying sealed: the CLI gives up cleanly.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["exec", "get"])
def test_sealed_at_boot_bounded_retries_then_exit_4_naming_the_seal(
    bootstrapped: Bootstrapped, tmp_path: Path, command: str
) -> None:
    """Vault sealed for the whole boot timeout: exit 4 after bounded retries, a message that says
    sealed, no child started (exec), nothing on stdout (get), no value anywhere."""
    ref = acme("sealed_boot")
    seed(bootstrapped, ref, CANARY)
    marker = tmp_path / "child-started"
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        **worker_environ(
            bootstrapped,
            bootstrapped.worker_token("acme-prod"),
            GREENTIC_SECRETS_BOOT_TIMEOUT=BOOT_TIMEOUT,
            SECRET_FOR_CHILD=ref.uri,
        ),
    }
    if command == "exec":
        argv = [str(GTC_SECRETS), "exec", "--", sys.executable, "-c", CHILD, str(marker)]
    else:
        argv = [str(GTC_SECRETS), "get", "secret://llm/sealed_boot"]

    bootstrapped.openbao.seal()
    try:
        started = time.monotonic()
        result = subprocess.run(
            argv, env=environ, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
        elapsed = time.monotonic() - started
    finally:
        bootstrapped.openbao.unseal()

    assert result.returncode == 4, result.stderr
    assert float(BOOT_TIMEOUT) <= elapsed < 30, "bounded by the boot timeout (plus start-up)"
    assert result.stderr.count("retrying in") >= 2
    assert f"Vault still unavailable after {BOOT_TIMEOUT}s" in result.stderr
    assert "503 sealed" in result.stderr
    assert "Vault is sealed" in result.stderr  # Vault's own words, kept in the message
    assert not marker.exists()
    assert result.stdout == ""
    assert CANARY not in result.stderr
    # Unsealed again, the same command works: the failure was Vault's state, not the worker's setup.
    again = subprocess.run(
        argv, env=environ, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert again.returncode == 0, again.stderr
    if command == "get":
        assert again.stdout == CANARY
    else:
        assert marker.read_text() == "started"
    assert CANARY not in again.stderr
