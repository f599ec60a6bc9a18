"""Benchmark of ``gtc-secrets exec --watch`` (issue 13) with 50 watched references. Not a test.

One supervisor, the real console script as a pod runs it: ``gtc-secrets exec --watch 10 -- python -m
gtc_secrets.demo_worker``, with ``WEBHOOK_SECRET`` and 49 more variables holding references (50), against the
local OpenBao of bench/run.py bootstrapped with a per-team role (which reads the KV metadata paths).

- Idle: ``IDLE_CHECKS`` checks with nothing changed (counted in OpenBao's audit log: one metadata read per
  reference per check). The supervisor's CPU per check (utime + stime from /proc) and OpenBao's, and the
  supervisor's resident memory (VmRSS) after the boot and after the checks. Baselines of the same run: the
  supervisor's CPU for its boot (interpreter, imports, login, 50 envelope reads, one batch decrypt,
  starting the worker) and OpenBao's for that boot, and the worker's own RSS. OpenBao's figures are net of
  what it spends with no client at all (raft and timers), measured for 10 s before the supervisor starts.
- Rotation, ``rounds`` times: ``gtc-secrets put`` of a new WEBHOOK_SECRET, then ``POST /hook`` with the new
  value until the worker answers 200. Put to serving, split at the supervisor's log line of the check that
  saw the new version: the wait for that check (the interval's doing: uniform over about 0 to 11 s) and
  from the check to serving (resolving the 50 references again, SIGTERM, starting the worker again).
  Baseline: the cold start (the supervisor started to the worker serving). Each put comes at a random
  moment of the interval, as an operator's would.

CPU times come from /proc in clock ticks (10 ms): over ``IDLE_CHECKS`` checks the per-check figure is good to
about 2 ms.

Its figures go into their own section of bench/RESULTS.md, between their own markers.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

from tests.support.openbao import OpenBaoServer
from tests.support.processes import stop_process

from bench.audit import replace_section
from gtc_secrets.refs import SecretRef

GTC_SECRETS: Final = Path(sys.executable).with_name("gtc-secrets")
INTERVAL_SECONDS: Final = 10  # the smallest the CLI accepts: the most checks per minute of benchmark
GRACE_SECONDS: Final = 10
IDLE_CHECKS: Final = 5
OPENBAO_QUIET_SECONDS: Final = 10.0
ROTATIONS: Final = 3
POLL_SECONDS: Final = 0.02
TIMEOUT_SECONDS: Final = 120.0
CHANGE_LINE: Final = "new version(s): "
BEGIN: Final = "<!-- bench/watch.py: figures of the last run, begin -->"
END: Final = "<!-- bench/watch.py: figures of the last run, end -->"


class Seeded(Protocol):
    """What bench/run.py's seeded_vault gives: OpenBao, the references, their values, a worker's env."""

    @property
    def openbao(self) -> OpenBaoServer: ...
    @property
    def refs(self) -> list[SecretRef]: ...
    @property
    def expected(self) -> dict[SecretRef, bytes]: ...
    @property
    def worker_env(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Probes:
    """bench/run.py's readings of /proc, and its progress notes."""

    note: Callable[[str], None]
    cpu_seconds: Callable[[int], float]  # utime + stime of a pid
    rss_bytes: Callable[[int], int]  # VmRSS of a pid
    children: Callable[[int], list[int]]
    openbao_cpu: Callable[[], float]  # of every OpenBao process of the benchmark


class Lines:
    """The supervisor's stderr (its log, and the worker's), each line with the time it arrived."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace")))

    def first_after(self, since: float, text: str) -> float | None:
        return next((at for at, line in self.lines if at >= since and text in line), None)


def _serves(port: int, value: bytes) -> bool:
    """POST /hook with ``value`` in the header: True when the worker answers 200."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hook",
        data=b"{}",
        headers={"X-Webhook-Secret": value.decode()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _until(condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> float:
    """Poll ``condition``; the monotonic time it first held."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"the supervisor exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)
    return time.monotonic()


def _metadata_reads(audit_log: Path, path: str) -> int:
    """Responses to metadata reads of ``path`` in OpenBao's audit log (one per check)."""
    try:
        text = audit_log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if '"type":"response"' in line and f'"path":"{path}"' in line)


def _put(admin_env: Mapping[str, str], ref: SecretRef, value: bytes) -> None:
    result = subprocess.run(  # noqa: S603 - our own console script, no shell
        [str(GTC_SECRETS), "put", ref.uri],
        input=value,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **admin_env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"put failed ({result.returncode}): {result.stderr[-300:]!r}")


@contextlib.contextmanager
def _supervisor(env: Mapping[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    command = [str(GTC_SECRETS), "exec", "--watch", str(INTERVAL_SECONDS), "--grace", str(GRACE_SECONDS)]
    command += ["--", sys.executable, "-m", "gtc_secrets.demo_worker"]
    process = subprocess.Popen(  # noqa: S603 - our own console script, no shell
        command, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield process, Lines(process.stderr)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # forwarded to the worker; the supervisor then exits
        stop_process(process, timeout=GRACE_SECONDS + 10)


def bench_watch(rounds: int, port: int, seeded: Seeded, probes: Probes) -> dict[str, Any]:
    """Idle checks, then ``max(rounds, ROTATIONS)`` rotations, against one supervisor (see the module)."""
    note = probes.note

    def cpu_ms(pid: int) -> float:
        return probes.cpu_seconds(pid) * 1000

    def rss_mib(pid: int) -> float:
        return probes.rss_bytes(pid) / 2**20

    openbao = seeded.openbao
    result: dict[str, Any] = {"references": len(seeded.refs), "interval_s": INTERVAL_SECONDS}
    admin_env = {
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "VAULT_CACERT": str(openbao.ca_file),
    }
    webhook, *others = seeded.refs
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C.UTF-8",
        **seeded.worker_env,
        "WEBHOOK_SECRET": f"secret://{webhook.category}/{webhook.name}",
        **{f"BENCH_SECRET_{i:02d}": f"secret://{r.category}/{r.name}" for i, r in enumerate(others, 1)},
        "DEMO_WORKER_HOST": "127.0.0.1",
        "DEMO_WORKER_PORT_NUMBER": str(port),
    }
    metadata_path = f"secret/metadata/greentic/{webhook.logical_path}"
    value = seeded.expected[webhook]
    # OpenBao works on its own too (raft, timers): its CPU per second with no client, to subtract from the
    # figures over the idle checks (a minute) and the boot.
    bao_quiet, quiet_from = probes.openbao_cpu() * 1000, time.monotonic()
    time.sleep(OPENBAO_QUIET_SECONDS)
    bao_ms_per_s = (probes.openbao_cpu() * 1000 - bao_quiet) / (time.monotonic() - quiet_from)
    result["openbao_quiet_ms_per_s"] = bao_ms_per_s
    bao_before_boot = probes.openbao_cpu() * 1000
    with _supervisor(env) as (process, lines):
        started = time.monotonic()
        serving = _until(lambda: _serves(port, value), "the worker to serve", process)
        result["cold_start_s"] = serving - started
        result["boot_cpu_ms"] = cpu_ms(process.pid)
        result["openbao_boot_cpu_ms"] = (
            probes.openbao_cpu() * 1000 - bao_before_boot - bao_ms_per_s * result["cold_start_s"]
        )
        (worker,) = probes.children(process.pid)  # the demo worker, the supervisor's only child
        result["worker_rss_mib"] = rss_mib(worker)
        result["rss_after_boot_mib"] = rss_mib(process.pid)
        note(f"watch: cold start {result['cold_start_s']:.2f} s, boot CPU {result['boot_cpu_ms']:.0f} ms")

        # Idle: count checks by the metadata reads of one reference (every check reads each once).
        audit_log = openbao.audit_log
        reads = _metadata_reads(audit_log, metadata_path)
        _until(lambda: _metadata_reads(audit_log, metadata_path) > reads, "the first check", process)
        time.sleep(1)  # let the first check finish: measure from one quiet moment to another
        reads = _metadata_reads(audit_log, metadata_path)
        cpu, bao, idle_from = cpu_ms(process.pid), probes.openbao_cpu() * 1000, time.monotonic()
        _until(
            lambda: _metadata_reads(audit_log, metadata_path) >= reads + IDLE_CHECKS,
            f"{IDLE_CHECKS} checks",
            process,
        )
        time.sleep(1)
        checks = _metadata_reads(audit_log, metadata_path) - reads
        result["idle_checks"] = checks
        result["cpu_per_check_ms"] = (cpu_ms(process.pid) - cpu) / checks
        bao_spent = probes.openbao_cpu() * 1000 - bao - bao_ms_per_s * (time.monotonic() - idle_from)
        result["openbao_cpu_per_check_ms"] = bao_spent / checks
        result["rss_after_checks_mib"] = rss_mib(process.pid)
        note(
            f"watch: {checks} idle checks, {result['cpu_per_check_ms']:.1f} ms CPU each "
            f"(OpenBao {result['openbao_cpu_per_check_ms']:.1f} ms), "
            f"RSS {result['rss_after_checks_mib']:.1f} MiB"
        )

        samples: list[dict[str, float]] = []
        phase = random.Random()  # noqa: S311 - when to put, not crypto
        for round_index in range(max(rounds, ROTATIONS)):
            # A put at a random moment of the interval, as an operator's would be (right after a restart
            # it would always wait a whole interval for the next check).
            time.sleep(phase.uniform(0, INTERVAL_SECONDS))
            value = f"bench-rotated-{round_index}-{os.urandom(8).hex()}".encode()
            put_at = time.monotonic()
            _put(admin_env, webhook, value)
            serving = _until(partial(_serves, port, value), "the worker to serve the new value", process)
            seen = lines.first_after(put_at, CHANGE_LINE)
            if seen is None:
                raise RuntimeError("the worker serves the new value but no check logged the change")
            samples.append(
                {"put_to_serving_s": serving - put_at, "wait_s": seen - put_at, "restart_s": serving - seen}
            )
            note(
                f"watch rotation {round_index + 1}: put to serving {serving - put_at:.2f} s "
                f"(waiting for the check {seen - put_at:.2f} s, check to serving {serving - seen:.2f} s)"
            )
        result["rss_after_rotations_mib"] = rss_mib(process.pid)
        changes = sum(CHANGE_LINE in line for _, line in lines.lines)
        if changes != len(samples):
            raise RuntimeError(f"{changes} changes logged for {len(samples)} puts")
    result["rotations"] = samples
    for key in ("put_to_serving_s", "wait_s", "restart_s"):
        result[key] = statistics.median(s[key] for s in samples)
    result["restart_to_cold_start"] = result["restart_s"] / result["cold_start_s"]
    result["check_to_boot_cpu"] = result["cpu_per_check_ms"] / result["boot_cpu_ms"]
    result["rss_to_worker"] = result["rss_after_checks_mib"] / result["worker_rss_mib"]
    return result


def render(result: dict[str, Any], date: str) -> str:
    refs, interval = result["references"], result["interval_s"]
    per_hour_at_60 = result["cpu_per_check_ms"] * 60 / 1000
    lines = [
        f"Measured {date}. `gtc-secrets exec --watch {interval} -- python -m gtc_secrets.demo_worker` with "
        f"{refs} references, against the local OpenBao (TLS, loopback, per-team role).",
        "",
        "| Figure | value | baseline (same run) | ratio |",
        "|---|---|---|---|",
        f"| supervisor CPU per check ({refs} metadata reads), mean of {result['idle_checks']} | "
        f"{result['cpu_per_check_ms']:.1f} ms | its boot: {result['boot_cpu_ms']:.0f} ms | "
        f"{result['check_to_boot_cpu']:.3f} |",
        f"| OpenBao CPU per check (less its own {result['openbao_quiet_ms_per_s']:.1f} ms/s with no client) "
        f"| {result['openbao_cpu_per_check_ms']:.1f} ms "
        f"| for the worker's boot: {result['openbao_boot_cpu_ms']:.0f} ms "
        f"| {result['openbao_cpu_per_check_ms'] / result['openbao_boot_cpu_ms']:.2f} |",
        f"| supervisor RSS after {result['idle_checks']} checks | {result['rss_after_checks_mib']:.1f} MiB | "
        f"the worker itself: {result['worker_rss_mib']:.1f} MiB | {result['rss_to_worker']:.2f} |",
        f"| supervisor RSS after boot / after {len(result['rotations'])} restarts | "
        f"{result['rss_after_boot_mib']:.1f} / {result['rss_after_rotations_mib']:.1f} MiB | | |",
        f"| put to the worker serving the new value, median of {len(result['rotations'])} | "
        f"{result['put_to_serving_s']:.2f} s | | |",
        f"| of which waiting for the next check | {result['wait_s']:.2f} s "
        f"| interval {interval} s (+/- 10 %) | |",
        f"| of which the check to serving (resolve {refs}, stop, start) | {result['restart_s']:.2f} s | "
        f"cold start: {result['cold_start_s']:.2f} s | {result['restart_to_cold_start']:.2f} |",
        "",
        f"- Per worker and hour at a 60 s interval: {per_hour_at_60:.1f} s of supervisor CPU and "
        f"{60 * refs} metadata reads for Vault.",
        "",
    ]
    return "\n".join(lines)


def write_section(markdown: str, path: Path) -> None:
    """Replace the figures between this benchmark's own markers (added at the end the first time)."""
    replace_section(path, "## `gtc-secrets exec --watch` (issue 13)", BEGIN, END, markdown)
