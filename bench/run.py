"""The benchmarks of issue 5: figures and ratios, printed and written into bench/RESULTS.md. Not tests.

    .venv/bin/python -m bench.run [--only admission,workers,decision,boot,memory,stream,audit,watch]
                                  [--duration S]
                                  [--rounds N]

- admission: wrk (1 thread, keep-alive, TLS) against ``gtc-admission serve`` on 127.0.0.1 and, interleaved in
  the same run, against bench/floor_server.py (bare aiohttp, same TLS, fixed allowed review): reviews/s at 16
  connections, p50/p99 at 1 connection, for the three pods of bench/pods.py. Ours as a ratio of the floor.
- workers: the same 16-connection load against ``serve --workers 2`` and ``--workers 1``, interleaved, with
  the CPU time wrk and the servers used (on a small machine wrk competes with the workers for the cores).
- decision: ``handle_review`` alone on the decoded review, microseconds per review (no I/O, no HTTP).
- boot: 50 references resolved by the runtime against a real local OpenBao (bootstrapped as the integration
  tests do) and by a naive hvac baseline (one login, then per secret a KV read and a transit decrypt in
  sequence), interleaved, with the same values checked.
- memory: RSS of a fresh ``serve`` after 1k and after 100k reviews (the three pods in turn).
- stream (issue 11, bench/stream.py): ``gtc-admission review`` of a mixed rendered stream, documents per
  second; written into its own section of RESULTS.md.
- audit (issue 11, bench/audit.py): ``gtc-admission audit`` of 10,000 pods against the API stand-in, time
  and peak RSS; written into its own section of RESULTS.md.
- watch (issue 13, bench/watch.py): ``gtc-secrets exec --watch`` with 50 references against the same local
  OpenBao as boot (per-team role): the supervisor's CPU per check and RSS, and the time from ``put`` to the
  worker serving the new value; written into its own section of RESULTS.md.

Every server's audit lines go to a file in the work folder (the write is part of our cost), not a terminal.
Medians over ``--rounds`` interleaved rounds are reported; ratios come from figures of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import http.client
import io
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
import hvac
from tests.support.openbao import OpenBaoServer
from tests.support.processes import stop_process
from tests.support.token_review import TokenReviewServer

from bench import audit as audit_bench
from bench import pods
from bench import stream as stream_bench
from bench import watch as watch_bench
from gtc_admission.admission import decode_body, handle_review
from gtc_admission.audit import audit_line
from gtc_admission.bindings import StaticBindings
from gtc_admission.config import load_config
from gtc_admission.tls import generate_certificates, write_certificates
from gtc_secrets import bootstrap
from gtc_secrets.backends import make_backend
from gtc_secrets.constants import transit_key_name
from gtc_secrets.curl_transport import DEFAULT_CONNECTIONS
from gtc_secrets.envelope import open_envelope, parse_envelope
from gtc_secrets.refs import SecretRef
from gtc_secrets.seed import HvacAdminVault, put_secret
from gtc_secrets.settings import AdminSettings, RuntimeSettings

BENCH_DIR: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH_DIR.parent
LUA_SCRIPT: Final = BENCH_DIR / "post.lua"
RESULTS_FILE: Final = BENCH_DIR / "RESULTS.md"
GTC_ADMISSION: Final = Path(sys.executable).with_name("gtc-admission")
PID_HEADER: Final = "X-Gtc-Admission-Pid"
RESULT_MARKER: Final = "BENCH_RESULT "
BEGIN_MARKER: Final = "<!-- bench/run.py: figures of the last run, begin -->"
END_MARKER: Final = "<!-- bench/run.py: figures of the last run, end -->"
# Variables that would make the server watch a real cluster: the benchmark uses static bindings only.
CLUSTER_ENV: Final = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")

ALL_BENCHMARKS: Final = ("admission", "workers", "decision", "boot", "memory", "stream", "audit", "watch")
THROUGHPUT_CONNECTIONS: Final = 16
LATENCY_CONNECTIONS: Final = 1
BOOT_REFERENCES: Final = 50
# Seconds the delay proxy adds in each direction (a pod and Vault on different nodes); the round trip it
# really adds is measured and reported, as thread wake-ups on a VM add to it.
BOOT_PROXY_ONE_WAY: Final = 0.0005
MEMORY_WARM: Final = 1_000
MEMORY_TOTAL: Final = 100_000
STALL_SECONDS: Final = 30.0  # a load that decides no review for this long has gone wrong

# The targets of issue 5.
TARGET_THROUGHPUT_RATIO: Final = 0.6
TARGET_P99_RATIO: Final = 2.0
TARGET_WORKERS_RATIO: Final = 1.6
TARGET_DECISION_US: Final = 100.0
TARGET_BOOT_SPEEDUP: Final = 5.0
TARGET_RSS_GROWTH: Final = 1.10


def note(message: str) -> None:
    """Progress on stderr; the summary goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --------------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One wrk run."""

    requests: int
    seconds: float
    errors: int
    p50_us: float
    p99_us: float
    wrk_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(
    url: str,
    bodies: Sequence[Path],
    *,
    connections: int,
    seconds: float,
    stop_after: int | None = None,
    done: Callable[[], bool] | None = None,
) -> Load:
    """Run wrk with one thread (keep-alive, TLS) and bench/post.lua; its figures and the CPU it used.

    With ``stop_after`` wrk's thread stops sending after that many responses, but wrk itself only exits
    after ``seconds``; so ``done`` is polled too, and once it is true wrk gets SIGINT, which makes it
    print its figures and exit at once.
    """
    env = {**os.environ, "BENCH_BODIES": ":".join(str(body) for body in bodies)}
    if stop_after is not None:
        env["BENCH_STOP_AFTER"] = str(stop_after)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    command += ["-s", str(LUA_SCRIPT), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The commands are built here from fixed names and our own paths: no shell, nothing from outside.
    process = subprocess.Popen(  # noqa: S603
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        if done is not None:
            while process.poll() is None and not done():
                time.sleep(0.25)
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=seconds + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stdout[-2000:]}{stderr[-2000:]}")
    figures = json.loads(lines[-1][len(RESULT_MARKER) :])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Load(
        requests=int(figures["requests"]),
        seconds=float(figures["seconds"]),
        errors=sum(int(count) for count in figures["errors"].values()),
        p50_us=float(figures["p50_us"]),
        p99_us=float(figures["p99_us"]),
        wrk_cpu_seconds=cpu,
    )


# --------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    """A server process under load: ``gtc-admission serve`` or the floor."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    workers: int = 1
    pids: set[int] = field(default_factory=set)  # the processes that answer (workers, or the server itself)

    def url(self, path: str = "/mutate") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def cpu_seconds(self) -> float:
        """CPU used so far by the server and every process below it."""
        return _cpu_seconds(self.process.pid) + sum(_cpu_seconds(pid) for pid in _children(self.process.pid))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /healthz answers from every worker (new connections spread over them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, headers, _ = self.request("GET", "/healthz")
                if status == 200:
                    self.pids.add(int(headers.get(PID_HEADER, self.process.pid)))
                    if len(self.pids) >= self.workers:
                        return
                    continue
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready with {self.workers} worker(s) in {timeout:g}s")

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


@dataclass(frozen=True)
class Certs:
    cert: Path
    key: Path
    ca: Path


def make_certs(directory: Path) -> Certs:
    paths = write_certificates(generate_certificates(["localhost"], ["127.0.0.1"]), directory)
    return Certs(cert=paths.cert, key=paths.key, ca=paths.ca_cert)


@contextlib.contextmanager
def running(
    name: str, command: list[str], *, workdir: Path, certs: Certs, port: int, workers: int = 1
) -> Iterator[Server]:
    """Start a server (stdout, the audit lines, to a file), wait until every worker answers, stop it."""
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    with (workdir / f"{name}.audit").open("wb") as out, (workdir / f"{name}.log").open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 (our own command line, no shell)
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
        )
    server = Server(name, process, port, certs.ca, workers)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def gtc_admission(
    name: str, workdir: Path, certs: Certs, *, workers: int = 1
) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    command = [str(GTC_ADMISSION), "--log-level", "WARNING", "serve", "--config", str(pods.EXAMPLE_CONFIG)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--tls-cert", str(certs.cert)]
    command += ["--tls-key", str(certs.key), "--workers", str(workers)]
    return running(name, command, workdir=workdir, certs=certs, port=port, workers=workers)


def floor_server(workdir: Path, certs: Certs) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    command = [sys.executable, "-m", "bench.floor_server", "--port", str(port)]
    command += ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    return running("floor", command, workdir=workdir, certs=certs, port=port)


def check_answers(server: Server, bodies: dict[str, Path]) -> None:
    """Before measuring: each pod gets the answer it should (a benchmark of wrong answers is worthless)."""
    for name, path in bodies.items():
        status, _, raw = server.request("POST", "/mutate", path.read_bytes())
        response = json.loads(raw)["response"]
        if status != 200 or response["allowed"] is not pods.EXPECTED_ALLOWED[name]:
            raise RuntimeError(f"{server.name} answered {name} with {status} {response}")
        if response["uid"] != pods.review(name)["request"]["uid"]:
            raise RuntimeError(f"{server.name} did not echo the uid of {name}")
        if pods.EXPECTED_ALLOWED[name] and response.get("patchType") != "JSONPatch":
            raise RuntimeError(f"{server.name} did not patch {name}")


def write_bodies(workdir: Path) -> dict[str, Path]:
    bodies = {}
    for name in pods.POD_NAMES:
        path = workdir / f"{name}.json"
        path.write_bytes(pods.body_bytes(name))
        bodies[name] = path
    return bodies


# --------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float
    rounds: int
    workdir: Path
    certs: Certs
    bodies: dict[str, Path]
    memory_reviews: int = MEMORY_TOTAL


def bench_admission(s: Settings) -> dict[str, Any]:
    """Ours against the floor, interleaved: per pod, throughput at 16 connections and latency at 1."""
    samples: dict[tuple[str, str, str], list[Load]] = {}
    # Server CPU per review under the throughput load: what each review costs the server, whether or not
    # wrk (which shares the 2 cores) was what limited the reviews per second.
    cpu_us: dict[tuple[str, str], list[float]] = {}
    with floor_server(s.workdir, s.certs) as floor, gtc_admission("ours", s.workdir, s.certs) as ours:
        check_answers(ours, s.bodies)
        for server in (floor, ours):  # warm up: first connections, caches, allocator
            wrk(server.url(), [s.bodies[pods.SMALL]], connections=THROUGHPUT_CONNECTIONS, seconds=1)
        for round_index in range(s.rounds):
            order = (floor, ours) if round_index % 2 == 0 else (ours, floor)
            for pod in pods.POD_NAMES:
                for mode, connections in (
                    ("throughput", THROUGHPUT_CONNECTIONS),
                    ("latency", LATENCY_CONNECTIONS),
                ):
                    for server in order:
                        cpu_before = server.cpu_seconds()
                        load = wrk(server.url(), [s.bodies[pod]], connections=connections, seconds=s.duration)
                        samples.setdefault((server.name, pod, mode), []).append(load)
                        if mode == "throughput" and load.requests:
                            used = server.cpu_seconds() - cpu_before
                            cpu_us.setdefault((server.name, pod), []).append(used / load.requests * 1e6)
                        note(
                            f"admission {round_index + 1}/{s.rounds} {pod:7} {mode:10} {server.name:5}: "
                            f"{load.per_second:8.0f}/s p50 {load.p50_us / 1000:6.2f} ms "
                            f"p99 {load.p99_us / 1000:6.2f} ms errors {load.errors}"
                        )
    result: dict[str, Any] = {}
    for pod in pods.POD_NAMES:
        row: dict[str, Any] = {}
        for name in ("floor", "ours"):
            throughput = samples[(name, pod, "throughput")]
            latency = samples[(name, pod, "latency")]
            row[name] = {
                "per_second": median([load.per_second for load in throughput]),
                "p50_ms": median([load.p50_us for load in latency]) / 1000,
                "p99_ms": median([load.p99_us for load in latency]) / 1000,
                "errors": sum(load.errors for load in throughput + latency),
                "cpu_us_per_review": median(cpu_us[(name, pod)]),
            }
        row["cpu_ratio"] = median(
            [f / o for f, o in zip(cpu_us[("floor", pod)], cpu_us[("ours", pod)], strict=True)]
        )
        # Ratios per round (same round, neighbouring runs), then their median.
        row["throughput_ratio"] = median(
            [
                o.per_second / f.per_second
                for o, f in zip(
                    samples[("ours", pod, "throughput")], samples[("floor", pod, "throughput")], strict=True
                )
            ]
        )
        row["p99_ratio"] = median(
            [
                o.p99_us / f.p99_us
                for o, f in zip(
                    samples[("ours", pod, "latency")], samples[("floor", pod, "latency")], strict=True
                )
            ]
        )
        row["p50_ratio"] = median(
            [
                o.p50_us / f.p50_us
                for o, f in zip(
                    samples[("ours", pod, "latency")], samples[("floor", pod, "latency")], strict=True
                )
            ]
        )
        result[pod] = row
    return result


def bench_workers(s: Settings) -> dict[str, Any]:
    """``--workers 2`` against ``--workers 1``, interleaved, 16 connections; CPU of wrk and servers."""
    samples: dict[tuple[str, str], list[tuple[Load, float]]] = {}
    with (
        gtc_admission("one-worker", s.workdir, s.certs, workers=1) as one,
        gtc_admission("two-workers", s.workdir, s.certs, workers=2) as two,
    ):
        check_answers(two, s.bodies)
        for server in (one, two):
            wrk(server.url(), [s.bodies[pods.SMALL]], connections=THROUGHPUT_CONNECTIONS, seconds=1)
        for round_index in range(s.rounds):
            order = (one, two) if round_index % 2 == 0 else (two, one)
            for pod in pods.POD_NAMES:
                for server in order:
                    cpu_before = server.cpu_seconds()
                    load = wrk(
                        server.url(), [s.bodies[pod]], connections=THROUGHPUT_CONNECTIONS, seconds=s.duration
                    )
                    server_cpu = server.cpu_seconds() - cpu_before
                    samples.setdefault((server.name, pod), []).append((load, server_cpu))
                    note(
                        f"workers round {round_index + 1}/{s.rounds} {pod:7} {server.name:11}: "
                        f"{load.per_second:8.0f}/s, CPU cores used: server {server_cpu / load.seconds:4.2f} "
                        f"wrk {load.wrk_cpu_seconds / load.seconds:4.2f}, errors {load.errors}"
                    )
    result: dict[str, Any] = {}
    for pod in pods.POD_NAMES:
        row: dict[str, Any] = {}
        for name in ("one-worker", "two-workers"):
            runs = samples[(name, pod)]
            row[name] = {
                "per_second": median([load.per_second for load, _ in runs]),
                "server_cores": median([cpu / load.seconds for load, cpu in runs]),
                "wrk_cores": median([load.wrk_cpu_seconds / load.seconds for load, _ in runs]),
                "errors": sum(load.errors for load, _ in runs),
            }
        row["ratio"] = median(
            [
                two_run[0].per_second / one_run[0].per_second
                for two_run, one_run in zip(
                    samples[("two-workers", pod)], samples[("one-worker", pod)], strict=True
                )
            ]
        )
        result[pod] = row
    return result


DECISION_REPEATS: Final = 9


def bench_decision(_s: Settings) -> dict[str, Any]:
    """The pure decision function alone, and with what the server does around it (decode, encode, audit).

    Timed in short runs (about 0.2 s) taken in turn for every pod and way, so that a burst of noise (steal
    time on a VM) spoils one run of each rather than every run of one pod; best and median per pod.
    """
    config = load_config(pods.EXAMPLE_CONFIG)
    bindings = StaticBindings(config.namespaces)
    moment = dt.datetime.now(dt.UTC)
    timers: dict[tuple[str, str], tuple[timeit.Timer, int]] = {}
    for pod in pods.POD_NAMES:
        raw = pods.body_bytes(pod)
        body = decode_body(raw)

        def decide(body: object = body) -> object:
            return handle_review(body, endpoint="mutate", config=config, bindings=bindings)

        def whole_core(raw: bytes = raw) -> object:
            outcome = handle_review(decode_body(raw), endpoint="mutate", config=config, bindings=bindings)
            audit_line(outcome.audit, moment)
            return json.dumps(outcome.review)

        for way, function in (("decision", decide), ("core", whole_core)):
            timer = timeit.Timer(function)
            number, _ = timer.autorange()
            timers[(pod, way)] = (timer, number)
    runs: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
    for _ in range(DECISION_REPEATS):
        for key, (timer, number) in timers.items():
            runs[key].append(timer.timeit(number) / number * 1e6)
    result: dict[str, Any] = {}
    for pod in pods.POD_NAMES:
        decision, core = runs[(pod, "decision")], runs[(pod, "core")]
        result[pod] = {
            "decision_us": min(decision),
            "decision_median_us": median(decision),
            "core_us": min(core),
            "core_median_us": median(core),
        }
        note(
            f"decision {pod:7}: {min(decision):7.1f} us (median {median(decision):7.1f}); "
            f"with decode+encode+audit {min(core):7.1f} us"
        )
    return result


def bench_memory(s: Settings) -> dict[str, Any]:
    """RSS of a fresh server after 1k reviews and after 100k (the three pods in turn, 16 connections)."""
    if s.memory_reviews <= MEMORY_WARM:
        raise ValueError(f"--memory-reviews must be more than {MEMORY_WARM}")
    bodies = [s.bodies[pod] for pod in pods.POD_NAMES]

    def reviews(server: Server) -> int:
        _, _, raw = server.request("GET", "/metrics")
        counts = re.findall(
            rb"^gtc_admission_review_duration_seconds_count\{[^}]*\} (\S+)$", raw, re.MULTILINE
        )
        return int(sum(float(count) for count in counts))

    with gtc_admission("memory", s.workdir, s.certs) as server:
        check_answers(server, s.bodies)
        pid = server.process.pid

        def load_until(total: int) -> Load:
            """Until the server has decided ``total`` reviews (wrk's thread stops at about that many)."""
            progress = {"reviews": -1, "since": time.monotonic()}

            def done() -> bool:
                decided = reviews(server)
                if decided != progress["reviews"]:
                    progress.update(reviews=decided, since=time.monotonic())
                elif time.monotonic() - progress["since"] > STALL_SECONDS:
                    raise RuntimeError(f"the memory run is stuck at {decided} reviews (wrk errors?)")
                return decided >= total

            return wrk(
                server.url(),
                bodies,
                connections=THROUGHPUT_CONNECTIONS,
                seconds=3600,
                stop_after=total - reviews(server),
                done=done,
            )

        warm_load = load_until(MEMORY_WARM)
        if warm_load.errors:
            raise RuntimeError(f"{warm_load.errors} errors while warming up the memory run")
        warm_reviews, warm_rss = reviews(server), rss_bytes(pid)
        note(f"memory: {warm_rss / 2**20:.1f} MiB after {warm_reviews} reviews")
        load = load_until(s.memory_reviews)
        total_reviews, total_rss = reviews(server), rss_bytes(pid)
        note(f"memory: {total_rss / 2**20:.1f} MiB after {total_reviews} reviews ({load.errors} errors)")
    return {
        "warm_reviews": warm_reviews,
        "warm_rss_mib": warm_rss / 2**20,
        "total_reviews": total_reviews,
        "total_rss_mib": total_rss / 2**20,
        "growth": total_rss / warm_rss,
        "errors": load.errors,
    }


@dataclass(frozen=True)
class SeededVault:
    """A bootstrapped OpenBao with ``refs`` seeded, and what a worker of tenant acme needs to read them."""

    openbao: OpenBaoServer
    addr: str  # where the clients reach it (OpenBao itself, or a DelayProxy in front of it)
    refs: list[SecretRef]
    expected: dict[SecretRef, bytes]  # the seeded values (never printed)
    worker_env: dict[str, str]  # the environment the webhook gives the worker
    jwt: str  # the worker's ServiceAccount token
    role: str
    transit_key: str


BOOT_ENV, BOOT_TENANT, BOOT_TEAM, BOOT_NAMESPACE = "prod", "acme", "core", "acme-prod"


@contextlib.contextmanager
def seeded_vault(
    workdir: Path, references: int = BOOT_REFERENCES, *, per_team: bool = False
) -> Iterator[SeededVault]:
    """OpenBao (dev mode, TLS) and the TokenReview stand-in, bootstrapped and seeded as the tests do.

    ``per_team``: the per-team role (``bootstrap --team``, which reads the KV metadata that ``exec --watch``
    checks) instead of the tenant-wide one.
    """
    role = f"gtc-{BOOT_ENV}-{BOOT_TENANT}" + (f"-{BOOT_TEAM}" if per_team else "")
    binding = ("--team", f"{BOOT_TEAM}={BOOT_NAMESPACE}") if per_team else ("--namespace", BOOT_NAMESPACE)
    refs = [
        SecretRef(BOOT_ENV, BOOT_TENANT, BOOT_TEAM, "bench", f"secret_{i:02d}") for i in range(references)
    ]
    for folder in ("openbao", "token-review"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    openbao = OpenBaoServer(workdir / "openbao")
    reviewer = TokenReviewServer(workdir / "token-review")
    try:
        openbao.start()
        reviewer.start()
        admin_env = {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "VAULT_CACERT": str(openbao.ca_file),
        }
        jwt_file = workdir / "token-reviewer.jwt"
        jwt_file.write_text(reviewer.reviewer_jwt, encoding="ascii")
        parser = argparse.ArgumentParser(prog="gtc-secrets")
        bootstrap.register(parser.add_subparsers(dest="subcommand", required=True), environ=admin_env)
        args = parser.parse_args(
            [
                bootstrap.COMMAND,
                *("--env", BOOT_ENV, "--tenant", BOOT_TENANT, *binding),
                *("--kubernetes-host", reviewer.url, "--kubernetes-ca", str(reviewer.ca_file)),
                *("--token-reviewer-jwt", str(jwt_file)),
            ]
        )
        out, err = io.StringIO(), io.StringIO()
        if bootstrap.command(args, admin_env, out=out, err=err) != 0:
            raise RuntimeError(f"bootstrap failed:\n{out.getvalue()}{err.getvalue()}")

        admin = AdminSettings.from_environ(admin_env)
        expected: dict[SecretRef, bytes] = {}
        vault = HvacAdminVault(admin)
        for ref in refs:
            expected[ref] = secrets.token_urlsafe(32).encode()
            put_secret(vault, admin, ref, expected[ref])
        jwt = reviewer.sign(
            BOOT_NAMESPACE, bootstrap.DEFAULT_SERVICE_ACCOUNT, audience=bootstrap.DEFAULT_AUDIENCE
        )
        token_file = workdir / "worker.jwt"
        token_file.write_text(jwt, encoding="ascii")
        worker_env = {
            "GREENTIC_SECRETS_BACKEND": "vault",
            "VAULT_ADDR": openbao.addr,
            "VAULT_CACERT": str(openbao.ca_file),
            "VAULT_K8S_ROLE": role,
            "VAULT_K8S_TOKEN_PATH": str(token_file),
            "GREENTIC_ENV": BOOT_ENV,
            "GREENTIC_TENANT": BOOT_TENANT,
            "GREENTIC_TEAM": BOOT_TEAM,
        }
        yield SeededVault(
            openbao=openbao,
            addr=openbao.addr,
            refs=refs,
            expected=expected,
            worker_env=worker_env,
            jwt=jwt,
            role=role,
            transit_key=transit_key_name(BOOT_ENV, BOOT_TENANT),
        )
    finally:
        reviewer.stop()
        openbao.stop()


def resolve_with_runtime(vault: SeededVault) -> dict[SecretRef, bytes]:
    """What a worker does at boot: the runtime's Vault backend, every reference at once."""
    backend = make_backend(RuntimeSettings.from_environ(vault.worker_env))
    values = asyncio.run(backend.resolve(vault.refs))
    return {ref: value.reveal_bytes() for ref, value in values.items()}


def resolve_naively(vault: SeededVault) -> dict[SecretRef, bytes]:
    """The baseline: hvac, one login, then for each secret a KV read and a transit decrypt, in sequence."""
    client = hvac.Client(url=vault.addr, verify=str(vault.openbao.ca_file))
    try:
        client.auth.kubernetes.login(role=vault.role, jwt=vault.jwt, mount_point="kubernetes")
        values: dict[SecretRef, bytes] = {}
        for ref in vault.refs:
            location = f"secret/data/greentic/{ref.logical_path}"
            read = client.secrets.kv.v2.read_secret_version(
                path=f"greentic/{ref.logical_path}", mount_point="secret", raise_on_deleted_version=True
            )
            envelope = parse_envelope(read["data"]["data"], ref, location)
            decrypted = client.secrets.transit.decrypt_data(
                name=vault.transit_key, ciphertext=envelope.wrapped_key, mount_point="transit"
            )
            data_key = base64.b64decode(decrypted["data"]["plaintext"])
            values[ref] = open_envelope(envelope, data_key, ref, location).reveal_bytes()
        return values
    finally:
        client.adapter.close()


def via(vault: SeededVault, addr: str) -> SeededVault:
    """The same vault, reached at ``addr`` by both the runtime and the baseline."""
    return replace(vault, addr=addr, worker_env={**vault.worker_env, "VAULT_ADDR": addr})


@contextlib.contextmanager
def delay_proxy(target_port: int, one_way: float) -> Iterator[int]:
    """bench/delay_proxy.py in front of ``target_port`` (a process of its own); its port."""
    command = [sys.executable, "-m", "bench.delay_proxy", "--target-port", str(target_port)]
    command += ["--one-way-ms", str(one_way * 1000)]
    process = subprocess.Popen(  # noqa: S603 (our own command line, no shell)
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        assert process.stdout is not None  # PIPE
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the delay proxy did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        stop_process(process, timeout=10)


def _request_ms(vault: SeededVault, requests: int = 50) -> float:
    """Mean time of one keep-alive HTTPS request to ``vault.addr`` (what one round trip costs there)."""
    host, port = vault.addr.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(vault.openbao.ca_file))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", "/v1/sys/health")
        connection.getresponse().read()  # the handshake is not a round trip of the resolution
        started = time.perf_counter()
        for _ in range(requests):
            connection.request("GET", "/v1/sys/health")
            connection.getresponse().read()
        return (time.perf_counter() - started) / requests * 1000
    finally:
        connection.close()


def _compare_resolutions(vault: SeededVault, rounds: int, label: str) -> dict[str, Any]:
    """Runtime and naive baseline interleaved; wall time and CPU of each; the values checked every time."""
    ways: dict[str, Callable[[SeededVault], dict[SecretRef, bytes]]] = {
        "runtime": resolve_with_runtime,
        "naive": resolve_naively,
    }
    timings: dict[str, list[float]] = {name: [] for name in ways}
    # CPU per way, to show whether the machine or the round trips bound it: this process (the client, and
    # the TokenReview stand-in, a thread of it) and OpenBao.
    client_cpu: dict[str, list[float]] = {name: [] for name in ways}
    openbao_cpu: dict[str, list[float]] = {name: [] for name in ways}
    bao_pids = [pid for pid in _children(os.getpid()) if _command_name(pid) == "bao"]
    for name, way in ways.items():  # warm up (first TLS handshakes, imports), and check the values
        if way(vault) != vault.expected:
            raise RuntimeError(f"the {name} resolution did not return the seeded values")
    for round_index in range(rounds):
        order = ("runtime", "naive") if round_index % 2 == 0 else ("naive", "runtime")
        for name in order:
            cpu, bao = time.process_time(), sum(_cpu_seconds(pid) for pid in bao_pids)
            started = time.perf_counter()
            values = ways[name](vault)
            timings[name].append(time.perf_counter() - started)
            client_cpu[name].append(time.process_time() - cpu)
            openbao_cpu[name].append(sum(_cpu_seconds(pid) for pid in bao_pids) - bao)
            if values != vault.expected:
                raise RuntimeError(f"the {name} resolution did not return the seeded values")
        note(
            f"boot {label} round {round_index + 1}: runtime {timings['runtime'][-1] * 1000:6.1f} ms, "
            f"naive {timings['naive'][-1] * 1000:6.1f} ms"
        )
    return {
        "request_ms": _request_ms(vault),
        "runtime_ms": median(timings["runtime"]) * 1000,
        "naive_ms": median(timings["naive"]) * 1000,
        "speedup": median([n / r for n, r in zip(timings["naive"], timings["runtime"], strict=True)]),
        "runtime_client_cpu_ms": median(client_cpu["runtime"]) * 1000,
        "naive_client_cpu_ms": median(client_cpu["naive"]) * 1000,
        "runtime_openbao_cpu_ms": median(openbao_cpu["runtime"]) * 1000,
        "naive_openbao_cpu_ms": median(openbao_cpu["naive"]) * 1000,
    }


def _openbao_cpu() -> float:
    """CPU seconds of every OpenBao process this benchmark started."""
    return sum(_cpu_seconds(pid) for pid in _children(os.getpid()) if _command_name(pid) == "bao")


def bench_watch(s: Settings) -> dict[str, Any]:
    """bench/watch.py against OpenBao seeded with 50 references and a per-team role."""
    probes = watch_bench.Probes(
        note=note, cpu_seconds=_cpu_seconds, rss_bytes=rss_bytes, children=_children, openbao_cpu=_openbao_cpu
    )
    with seeded_vault(s.workdir / "watch", per_team=True) as vault:
        return watch_bench.bench_watch(s.rounds, free_port(), vault, probes)


def bench_boot(s: Settings) -> dict[str, Any]:
    """Runtime vs naive hvac, 50 references, interleaved: on loopback (the issue's setup), then through a
    proxy that delays each direction by BOOT_PROXY_ONE_WAY (a pod and Vault on different nodes)."""
    rounds = max(s.rounds, 5)
    with seeded_vault(s.workdir / "boot") as vault:
        result = _compare_resolutions(vault, rounds, "loopback")
        port = int(vault.openbao.addr.rsplit(":", 1)[1])
        with delay_proxy(port, BOOT_PROXY_ONE_WAY) as proxy_port:
            delayed = via(vault, f"https://127.0.0.1:{proxy_port}")
            result["with_rtt"] = _compare_resolutions(delayed, rounds, "through the delay proxy")
        result["one_way_ms"] = BOOT_PROXY_ONE_WAY * 1000
        result["references"] = len(vault.refs)
        result["same_values"] = True
        result["openbao_version"] = _command_output([str(Path(sys.executable).with_name("bao")), "version"])
        return result


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _command_output(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else "?"
    )


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable by this process",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "wrk": _command_output(["wrk", "-v"]),
        "load_before": " ".join(f"{load:.2f}" for load in os.getloadavg()),
    }


@dataclass(frozen=True)
class CpuAccount:
    """Machine-wide CPU (``/proc/stat``) and this benchmark's own (itself and every descendant it reaped),
    so that what other processes used during the run can be reported: a shared machine shows there."""

    wall: float
    machine_busy: float  # user + nice + system of all cores, seconds
    steal: float  # time the hypervisor gave to other guests, seconds
    ours: float

    @classmethod
    def now(cls) -> CpuAccount:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        return cls(time.monotonic(), (fields[0] + fields[1] + fields[2]) / tick, fields[7] / tick, ours)

    def since(self, start: CpuAccount) -> dict[str, float]:
        wall = self.wall - start.wall
        ours = self.ours - start.ours
        others = max(0.0, (self.machine_busy - start.machine_busy) - ours)
        return {
            "wall_s": wall,
            "ours_cores": ours / wall,
            "others_cores": others / wall,
            "steal_cores": (self.steal - start.steal) / wall,
        }


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: dict[str, Any], info: dict[str, str], settings: Settings, shared: str) -> str:
    cpu = results["cpu"]
    lines = [
        f"Measured {info['date']} by `make bench` (`python -m bench.run`), "
        f"{settings.rounds} interleaved round(s) "
        f"of {settings.duration:g} s per load; medians. {shared}".rstrip(),
        "",
        f"During the {cpu['wall_s']:.0f} s of the run the benchmark (wrk, servers, OpenBao, itself) kept "
        f"{cpu['ours_cores']:.2f} cores busy on average, other processes of this machine "
        f"{cpu['others_cores']:.2f} cores, and the hypervisor gave {cpu['steal_cores']:.2f} cores' worth of "
        "time to other guests (steal).",
        "",
        "| Machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']} |",
        f"| Cores | {info['cores']} |",
        f"| Kernel | {info['kernel']} |",
        f"| Python / aiohttp | {info['python']} / {info['aiohttp']} |",
        f"| wrk | {info['wrk']} |",
    ]
    if "boot" in results:
        lines.append(f"| OpenBao | {results['boot']['openbao_version']} |")
    lines.append(
        f"| Load average (1, 5, 15 min) before / after | {info['load_before']} / {info['load_after']} |"
    )
    lines.append("")

    if "admission" in results:
        lines += [
            "### Admission over HTTPS",
            "",
            "wrk: 1 thread, keep-alive, TLS; 16 connections for reviews/s, 1 connection for latency.",
            "",
            "| Pod | floor reviews/s | ours reviews/s | ours / floor (target >= 0.6) "
            "| floor p50 / p99 ms | ours p50 / p99 ms | ours p99 / floor p99 (target <= 2) "
            "| ours p50 / floor p50 | server CPU us per review, floor / ours (floor / ours) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for pod in pods.POD_NAMES:
            row = results["admission"][pod]
            floor, ours = row["floor"], row["ours"]
            lines.append(
                f"| {pods.DESCRIPTIONS[pod]} | {floor['per_second']:.0f} | {ours['per_second']:.0f} "
                f"| {row['throughput_ratio']:.2f} "
                f"({_met(row['throughput_ratio'] >= TARGET_THROUGHPUT_RATIO)}) "
                f"| {floor['p50_ms']:.2f} / {floor['p99_ms']:.2f} "
                f"| {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} "
                f"| {row['p99_ratio']:.2f} ({_met(row['p99_ratio'] <= TARGET_P99_RATIO)}) "
                f"| {row['p50_ratio']:.2f} "
                f"| {floor['cpu_us_per_review']:.0f} / {ours['cpu_us_per_review']:.0f} "
                f"({row['cpu_ratio']:.2f}) |"
            )
        errors = sum(
            results["admission"][pod][name]["errors"] for pod in pods.POD_NAMES for name in ("floor", "ours")
        )
        lines += ["", f"Errors (connect, read, write, timeout, HTTP >= 400) across every run: {errors}.", ""]

    if "workers" in results:
        lines += [
            "### `serve --workers 2` vs `--workers 1` (16 connections; CPU in cores busy during the load)",
            "",
            "| Pod | 1 worker reviews/s | 2 workers reviews/s | ratio (target >= 1.6) "
            "| server cores, 1 / 2 workers | wrk cores, 1 / 2 workers |",
            "|---|---|---|---|---|---|",
        ]
        for pod in pods.POD_NAMES:
            row = results["workers"][pod]
            one, two = row["one-worker"], row["two-workers"]
            lines.append(
                f"| {pods.DESCRIPTIONS[pod]} | {one['per_second']:.0f} | {two['per_second']:.0f} "
                f"| {row['ratio']:.2f} ({_met(row['ratio'] >= TARGET_WORKERS_RATIO)}) "
                f"| {one['server_cores']:.2f} / {two['server_cores']:.2f} "
                f"| {one['wrk_cores']:.2f} / {two['wrk_cores']:.2f} |"
            )
        lines.append("")

    if "decision" in results:
        lines += [
            "### The pure decision function (`handle_review` on the decoded review, in process)",
            "",
            "| Pod | decision us (best / median of 9 runs) | target "
            "| decode + decision + response JSON + audit line us |",
            "|---|---|---|---|",
        ]
        for pod in pods.POD_NAMES:
            row = results["decision"][pod]
            target = f"< 100 ({_met(row['decision_us'] < TARGET_DECISION_US)})" if pod == pods.SMALL else "-"
            lines.append(
                f"| {pods.DESCRIPTIONS[pod]} | {row['decision_us']:.1f} / {row['decision_median_us']:.1f} "
                f"| {target} | {row['core_us']:.1f} / {row['core_median_us']:.1f} |"
            )
        lines.append("")

    if "boot" in results:
        boot, rtt = results["boot"], results["boot"]["with_rtt"]
        added = f"+{boot['one_way_ms']:g} ms each way"
        lines += [
            f"### Boot resolution ({boot['references']} references, real OpenBao over TLS, Kubernetes auth)",
            "",
            "Runtime: libcurl through pycurl (`CurlTransport`), HTTP/2 over one TLS connection (HTTP/1.1 "
            f"would get up to {DEFAULT_CONNECTIONS}): one login, all KV reads at once as concurrent streams, "
            "one transit batch decrypt. "
            "Naive: hvac, one login, then per secret a KV read and a transit decrypt, in sequence. "
            "Both check the seeded values. Second pair of columns: through a proxy that delays each "
            f"direction by {boot['one_way_ms']:g} ms (measured: a keep-alive `GET /v1/sys/health` takes "
            f"{boot['request_ms']:.2f} ms direct, {rtt['request_ms']:.2f} ms through the proxy).",
            "",
            f"| | runtime | naive hvac | runtime, {added} | naive, {added} |",
            "|---|---|---|---|---|",
            f"| wall ms | {boot['runtime_ms']:.1f} | {boot['naive_ms']:.1f} "
            f"| {rtt['runtime_ms']:.1f} | {rtt['naive_ms']:.1f} |",
            f"| CPU ms of the client process (with the TokenReview stand-in thread) "
            f"| {boot['runtime_client_cpu_ms']:.0f} | {boot['naive_client_cpu_ms']:.0f} "
            f"| {rtt['runtime_client_cpu_ms']:.0f} | {rtt['naive_client_cpu_ms']:.0f} |",
            f"| CPU ms of OpenBao "
            f"| {boot['runtime_openbao_cpu_ms']:.0f} | {boot['naive_openbao_cpu_ms']:.0f} "
            f"| {rtt['runtime_openbao_cpu_ms']:.0f} | {rtt['naive_openbao_cpu_ms']:.0f} |",
            f"| speed-up (target >= 5) "
            f"| {boot['speedup']:.1f}x ({_met(boot['speedup'] >= TARGET_BOOT_SPEEDUP)}) "
            f"| | {rtt['speedup']:.1f}x ({_met(rtt['speedup'] >= TARGET_BOOT_SPEEDUP)}) | |",
            "",
            f"Same values as seeded, every run: {'yes' if boot['same_values'] else 'NO'}.",
            "",
        ]

    if "memory" in results:
        memory = results["memory"]
        lines += [
            "### Memory (RSS of one `serve` process; the three pods in turn)",
            "",
            "| after reviews | RSS MiB | after reviews | RSS MiB | growth (target <= 1.10) |",
            "|---|---|---|---|---|",
            f"| {memory['warm_reviews']} | {memory['warm_rss_mib']:.1f} | {memory['total_reviews']} "
            f"| {memory['total_rss_mib']:.1f} | {memory['growth']:.3f} "
            f"({_met(memory['growth'] <= TARGET_RSS_GROWTH)}) |",
            "",
        ]
    return "\n".join(lines)


def write_results(markdown: str, path: Path = RESULTS_FILE) -> None:
    """Replace the generated part of RESULTS.md (between the markers), keeping the notes around it."""
    block = f"{BEGIN_MARKER}\n{markdown}\n{END_MARKER}"
    text = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else f"# Benchmark results\n\n{BEGIN_MARKER}\n{END_MARKER}\n"
    )
    if BEGIN_MARKER not in text or END_MARKER not in text:
        text = f"{text.rstrip()}\n\n{BEGIN_MARKER}\n{END_MARKER}\n"
    head, rest = text.split(BEGIN_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    path.write_text(f"{head}{block}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.run", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL_BENCHMARKS),
        help="comma-separated subset of " + ", ".join(ALL_BENCHMARKS),
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk load (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--memory-reviews",
        type=int,
        default=MEMORY_TOTAL,
        help=f"reviews of the memory run (default {MEMORY_TOTAL}; RSS is compared with after {MEMORY_WARM})",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument(
        "--shared",
        default="",
        help="a sentence on what else ran on the machine while measuring (written into RESULTS.md)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ALL_BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if {"admission", "workers", "memory"} & set(chosen) and shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install -y wrk; make bench does it)")

    info = machine()
    start = CpuAccount.now()
    results: dict[str, Any] = {}
    functions: dict[str, Callable[[Settings], dict[str, Any]]] = {
        "decision": bench_decision,
        "admission": bench_admission,
        "workers": bench_workers,
        "memory": bench_memory,
        "boot": bench_boot,
        "stream": lambda s: stream_bench.bench(s.workdir),
        "audit": lambda s: audit_bench.bench_audit(s.rounds, s.workdir, note),
        "watch": bench_watch,
    }
    with tempfile.TemporaryDirectory(prefix="gtc-bench-") as tmp:
        workdir = Path(tmp)
        settings = Settings(
            duration=args.duration,
            rounds=args.rounds,
            workdir=workdir,
            certs=make_certs(workdir / "certs"),
            bodies=write_bodies(workdir),
            memory_reviews=args.memory_reviews,
        )
        for name in ALL_BENCHMARKS:
            if name in chosen:
                note(f"--- {name}")
                results[name] = functions[name](settings)
    info["load_after"] = " ".join(f"{load:.2f}" for load in os.getloadavg())
    # Benchmarks with their own section of RESULTS.md, so that `--only stream` (etc.) keeps the others.
    own_sections: dict[str, tuple[Callable[[dict[str, Any]], str], Callable[[str, Path], None]]] = {
        "stream": (lambda r: stream_bench.render(r, f"measured {info['date']}"), stream_bench.write_results),
        "audit": (lambda r: audit_bench.render(r, info["date"]), audit_bench.write_section),
        "watch": (lambda r: watch_bench.render(r, info["date"]), watch_bench.write_section),
    }
    for name, (render_section, write_section) in own_sections.items():
        if name in results:
            section = render_section(results.pop(name))
            print(section)
            if not args.no_write:
                write_section(section, RESULTS_FILE)
            if not results:
                return 0
    results["cpu"] = CpuAccount.now().since(start)
    markdown = render(results, info, settings, args.shared)
    print(markdown)
    print(json.dumps(results, indent=2, default=str), file=sys.stderr)
    if not args.no_write:
        write_results(markdown)
        note(f"figures written into {RESULTS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
