"""``gtc-secrets exec --watch`` against a real OpenBao, with real processes.

The worker logs in with the per-team role of ``gtc-secrets bootstrap --team core=acme-watch`` (which
grants ``read`` on the team's KV metadata paths; the tenant-wide role of the module's fixture grants it on
the tenant's).
Kubernetes auth asks the TokenReview stand-in (tests/support/token_review.py), as in the other modules.

The child is a small Python program that appends ``<pid> <sha256 of its secret>`` to a file when it
starts, then waits for SIGTERM: a test reads how often and with which value it was started, never the
value itself.

- the console script, as a pod runs it (``--watch 10``, the smallest interval it accepts): a ``put`` of a
  new version restarts the child with the new value within the interval (+ jitter) and the grace, exactly
  once; SIGTERM to the supervisor reaches the child; the canary is in neither the output, the logs nor
  either process's argv;
- in-process with a short interval (the library allows it; the CLI does not): an unchanged secret never
  restarts the child over many checks; OpenBao stopped during the watch leaves the child running, and
  once OpenBao is back a change is picked up;
- Vault's answers the watch relies on: the tenant-wide role gets 403 on the metadata path (the policy
  change the README names), a soft-deleted latest version and deleted metadata are errors for the
  reference and leave the child's values alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from gtc_secrets import cli
from gtc_secrets.backends import VaultBackend, make_backend
from gtc_secrets.refs import SecretRef
from gtc_secrets.settings import RuntimeSettings, WatchSettings
from gtc_secrets.vault import Forbidden, NotFound
from gtc_secrets.watch import VaultWatcher
from tests.integration.conftest import ENV, Bootstrapped, bootstrap_args, run_bootstrap
from tests.integration.test_runtime_vault import seed, worker_environ
from tests.support.processes import stop_process

pytestmark = pytest.mark.integration

CANARY: Final = "canary-watch-int-6d20c4-never-print-me"
GTC_SECRETS: Final = Path(sys.executable).parent / "gtc-secrets"
NAMESPACE: Final = "acme-watch"
TEAM_ROLE: Final = f"gtc-{ENV}-acme-core"
CLI_INTERVAL: Final = 10.0  # the smallest the CLI accepts
GRACE: Final = 5.0
JITTER: Final = 1.1
# Seconds a resolution, a restart and a Python start-up may take on the shared 2-core machine.
SLACK: Final = 15.0
SHORT_INTERVAL: Final = 0.3
WAIT: Final = 60.0

CHILD: Final = """
import hashlib, os, signal, sys, time
with open(sys.argv[1], "a") as out:
    out.write(f"{os.getpid()} {hashlib.sha256(os.environ['BOT_TOKEN'].encode()).hexdigest()}\\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Team:
    bootstrapped: Bootstrapped
    token_file: Path

    def environ(self, tmp_path: Path, **extra: str) -> dict[str, str]:
        """What the webhook gives a pod of team core in namespace acme-watch (per-team role)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LC_ALL": "C.UTF-8",
            **worker_environ(self.bootstrapped, self.token_file, VAULT_K8S_ROLE=TEAM_ROLE),
            **extra,
        }


@pytest.fixture(scope="module")
def team(bootstrapped: Bootstrapped, tmp_path_factory: pytest.TempPathFactory) -> Team:
    files = tmp_path_factory.mktemp("watch-team")
    argv = bootstrap_args(ENV, "acme", [], bootstrapped.reviewer, files, "--team", f"core={NAMESPACE}")
    code, out, err = run_bootstrap(argv, bootstrapped.openbao.admin_environ())
    if code != 0:
        pytest.fail(f"bootstrap --team failed with exit code {code}:\n{out}{err}")
    return Team(bootstrapped, bootstrapped.worker_token(NAMESPACE))


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def starts(marker: Path) -> list[tuple[int, str]]:
    """(pid, digest) of every start of the child so far."""
    if not marker.exists():
        return []
    return [
        (int(pid), hexdigest) for pid, hexdigest in (line.split() for line in marker.read_text().splitlines())
    ]


def put(team: Team, ref: SecretRef, value: str) -> subprocess.CompletedProcess[str]:
    """`gtc-secrets put` as an operator runs it (value on stdin)."""
    return subprocess.run(
        [str(GTC_SECRETS), "put", ref.uri],
        input=value,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **team.bootstrapped.openbao.admin_environ()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_for(
    condition: object, what: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll until ``condition()`` holds; the seconds it took. Fails naming ``what``."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the supervisor exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


# ---------------------------------------------------------------------------------------------
# The console script, as a pod runs it.
# ---------------------------------------------------------------------------------------------


def test_a_put_restarts_the_watched_child_once_with_the_new_value(
    team: Team, tmp_path: Path, child: Path
) -> None:
    """`exec --watch 10 --grace 5`: a put while the child runs restarts it with the new value within
    10 s (+ jitter) + grace, exactly once (no second restart at the next check); SIGTERM to the
    supervisor stops the child and the supervisor exits 0; the canary is nowhere but the child's env."""
    ref = SecretRef(ENV, "acme", "core", "telegram", "bot_token_cli")
    assert put(team, ref, f"{CANARY}-1").returncode == 0
    marker = tmp_path / "starts"
    log_file = tmp_path / "supervisor.log"
    environ = team.environ(tmp_path, BOT_TOKEN="secret://telegram/bot_token_cli")
    argv = [str(GTC_SECRETS), "exec", "--watch", f"{CLI_INTERVAL:g}", "--grace", f"{GRACE:g}", "--"]
    argv += [sys.executable, str(child), str(marker)]
    with log_file.open("wb") as log:
        supervisor = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(starts(marker)) == 1, "the first start", WAIT, supervisor)
        ((first_pid, first_digest),) = starts(marker)
        assert first_digest == digest(f"{CANARY}-1")
        assert CANARY.encode() not in cmdline(supervisor.pid) + cmdline(first_pid)

        rotated = put(team, ref, f"{CANARY}-2")
        assert rotated.returncode == 0, rotated.stderr
        assert "(envelope only), version 2" in rotated.stderr
        assert "workers without --watch keep the old value until they are restarted" in rotated.stderr
        took = wait_for(
            lambda: len(starts(marker)) == 2, "the restart", CLI_INTERVAL * JITTER + GRACE + SLACK, supervisor
        )
        (_, _), (second_pid, second_digest) = starts(marker)
        assert second_digest == digest(f"{CANARY}-2")
        assert second_pid != first_pid
        assert not Path(f"/proc/{first_pid}").exists(), "the first child is gone (reaped, no zombie)"
        assert CANARY.encode() not in cmdline(supervisor.pid) + cmdline(second_pid)

        # Another interval: the check after the restart must find nothing new.
        time.sleep(CLI_INTERVAL * JITTER + 1)
        assert len(starts(marker)) == 2, "restarted again without a new version"
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=GRACE + SLACK) == 0  # the child's own status: it exits 0 on SIGTERM
    finally:
        stop_process(supervisor, timeout=GRACE + SLACK)
    output = log_file.read_text()
    assert (
        output.count("new version(s): secret://prod/acme/core/telegram/bot_token_cli (version 1 -> 2)") == 1
    )
    assert "forwarding SIGTERM" in output
    assert CANARY not in output
    print(f"put to restart: {took:.1f}s (interval {CLI_INTERVAL:g}s, grace {GRACE:g}s)")


# ---------------------------------------------------------------------------------------------
# In-process, with a short interval.
# ---------------------------------------------------------------------------------------------


@dataclass
class Watched:
    task: asyncio.Task[int]
    marker: Path

    async def until(self, condition: object, what: str, timeout: float = WAIT) -> None:
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while not condition():
            if self.task.done():
                raise AssertionError(f"the supervisor returned {self.task.result()} while waiting for {what}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        """SIGTERM to the running child (it exits 0): the supervisor returns its status."""
        if not self.task.done():
            os.kill(starts(self.marker)[-1][0], signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            return await self.task


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="gtc_secrets")
    yield caplog
    assert CANARY not in caplog.text


async def watch_in_process(team: Team, tmp_path: Path, child: Path, name: str) -> Watched:
    """cli.exec_watched (what `exec --watch` runs) with SHORT_INTERVAL, once the child has started."""
    environ = team.environ(tmp_path, BOT_TOKEN=f"secret://telegram/{name}")
    settings = RuntimeSettings.from_environ(environ)
    backend = make_backend(settings)
    assert isinstance(backend, VaultBackend)
    marker = tmp_path / "starts"
    command = [sys.executable, str(child), str(marker)]
    watch = WatchSettings(interval=SHORT_INTERVAL, on_change="restart", grace_seconds=GRACE)
    plan = cli.plan_exec(environ, settings.scope)
    task = asyncio.create_task(
        cli.exec_watched(command, environ, plan, backend, settings=settings, watch=watch)
    )
    watched = Watched(task, marker)
    await watched.until(lambda: len(starts(marker)) == 1, "the first start")
    return watched


def metadata_reads(team: Team, name: str, since: int) -> int:
    path = f"secret/metadata/greentic/prod/acme/core/telegram/{name}"
    return sum(
        1
        for entry in team.bootstrapped.openbao.audit_entries()[since:]
        if entry.get("type") == "response" and entry.get("request", {}).get("path") == path
    )


async def test_an_unchanged_secret_never_restarts_the_child(
    team: Team, tmp_path: Path, child: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Many checks (counted in OpenBao's audit log), one start."""
    ref = SecretRef(ENV, "acme", "core", "telegram", "steady")
    seed(team.bootstrapped, ref, f"{CANARY}-steady")
    since = len(team.bootstrapped.openbao.audit_entries())
    watched = await watch_in_process(team, tmp_path, child, "steady")
    try:
        await watched.until(lambda: metadata_reads(team, "steady", since) >= 8, "eight checks")
        assert len(starts(watched.marker)) == 1
    finally:
        assert await watched.stop() == 0
    assert starts(watched.marker)[0][1] == digest(f"{CANARY}-steady")
    assert "new version(s):" not in logs.text


async def test_openbao_stopped_during_the_watch_then_a_change_is_picked_up(
    team: Team, tmp_path: Path, child: Path, logs: pytest.LogCaptureFixture
) -> None:
    """OpenBao stopped: the child keeps running (same pid, one start), the checks warn and back off.
    OpenBao back, a put: the child restarts with the new value."""
    ref = SecretRef(ENV, "acme", "core", "telegram", "outage")
    seed(team.bootstrapped, ref, f"{CANARY}-before")
    openbao = team.bootstrapped.openbao
    watched = await watch_in_process(team, tmp_path, child, "outage")
    try:
        ((pid, _),) = starts(watched.marker)
        await asyncio.to_thread(openbao.stop)
        try:
            await watched.until(
                lambda: sum("Vault unavailable" in r.message for r in logs.records) >= 3,
                "three failed checks",
            )
            assert starts(watched.marker) == [(pid, digest(f"{CANARY}-before"))]
            assert Path(f"/proc/{pid}").exists()
        finally:
            await asyncio.to_thread(openbao.start)
        seed(team.bootstrapped, ref, f"{CANARY}-after")
        await watched.until(lambda: len(starts(watched.marker)) == 2, "the restart after OpenBao is back")
        assert starts(watched.marker)[1][1] == digest(f"{CANARY}-after")
    finally:
        if not openbao.server.running:
            await asyncio.to_thread(openbao.start)
        assert await watched.stop() == 0
    warnings = [r.message for r in logs.records if "Vault unavailable" in r.message]
    assert all("the worker keeps running with the values it has" in m for m in warnings)
    assert "secret://prod/acme/core/telegram/outage (version 1 -> 2)" in logs.text


# ---------------------------------------------------------------------------------------------
# What Vault answers to the metadata reads.
# ---------------------------------------------------------------------------------------------


async def test_both_roles_read_the_versions_they_may_watch_and_no_other_team_s(team: Team) -> None:
    """The per-team role and the tenant-wide role read `secret/metadata/...` of their scope (versions only:
    what exec --watch checks); the per-team role gets 403 from Vault for another team's metadata."""
    ref = SecretRef(ENV, "acme", "core", "telegram", "policy")
    other = SecretRef(ENV, "acme", "billing", "telegram", "policy")
    seed(team.bootstrapped, ref, f"{CANARY}-policy")
    seed(team.bootstrapped, other, f"{CANARY}-billing")
    for role, token_file in (
        (TEAM_ROLE, team.token_file),
        ("gtc-prod-acme", team.bootstrapped.worker_token("acme-prod")),
    ):
        backend = make_backend(
            RuntimeSettings.from_environ(worker_environ(team.bootstrapped, token_file, VAULT_K8S_ROLE=role))
        )
        assert isinstance(backend, VaultBackend)
        vault = backend.client()
        try:
            assert (await vault.read_kv_version(ref.logical_path)).number == 1
            if role == TEAM_ROLE:
                with pytest.raises(
                    Forbidden, match="GET /v1/secret/metadata/greentic/prod/acme/billing/telegram/policy: 403"
                ):
                    await vault.read_kv_version(other.logical_path)
            else:
                assert (await vault.read_kv_version(other.logical_path)).number == 1
        finally:
            await vault.close()


async def test_deleted_after_boot_is_an_error_for_the_reference_and_changes_nothing(
    team: Team, logs: pytest.LogCaptureFixture
) -> None:
    """`kv delete` (the latest version soft-deleted), then `kv metadata delete`: each check names the
    reference, nothing is resolved again; putting it again is a change."""
    ref = SecretRef(ENV, "acme", "core", "telegram", "deleted")
    seed(team.bootstrapped, ref, f"{CANARY}-deleted")
    root = team.bootstrapped.openbao.client()
    sub = f"greentic/{ref.logical_path}"
    backend = make_backend(
        RuntimeSettings.from_environ(
            worker_environ(team.bootstrapped, team.token_file, VAULT_K8S_ROLE=TEAM_ROLE)
        )
    )
    assert isinstance(backend, VaultBackend)
    vault = backend.client()
    watcher = VaultWatcher(vault, [ref], interval=SHORT_INTERVAL)
    try:
        await watcher.boot(timeout=30)
        root.secrets.kv.v2.delete_latest_version_of_secret(path=sub)
        assert await watcher.check() is None
        with pytest.raises(NotFound, match=r"latest version \(1\) is deleted or destroyed"):
            await vault.read_kv_version(ref.logical_path)
        root.secrets.kv.v2.delete_metadata_and_all_versions(path=sub)
        assert await watcher.check() is None
        errors = [r.message for r in logs.records if r.levelno == logging.ERROR]
        assert len(errors) == 2
        assert "deleted or destroyed" in errors[0]
        assert "404 not found" in errors[1]
        seed(team.bootstrapped, ref, f"{CANARY}-again")
        resolved = await watcher.check()
        assert resolved is not None
        assert resolved.values[ref].reveal_bytes() == f"{CANARY}-again".encode()
        assert "(version 1 -> 1, deleted and written again)" in logs.text
    finally:
        await vault.close()
