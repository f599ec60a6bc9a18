"""``gtc_secrets.supervisor`` with real processes: a driver process runs ``supervise`` (so the tests can
signal it and run it as PID 1 of a new PID namespace), its child is a small Python script written to
tmp_path that writes what happens to it (starts, its environment, the signals it gets) to a record file.

Nothing here waits a fixed time to decide an outcome: the tests wait for events in the record (with a
generous deadline that only a failure reaches) and for the driver's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gtc_secrets.supervisor import EXIT_SECRETS_CHANGED, OnChange, _Supervisor, supervise
from tests.support.processes import stop_process
from tests.support.supervisor_driver import write_change

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CANARY = "canary-supervisor-5d1e9b-never-print-me"
CANARY_ROTATED = "canary-supervisor-rotated-77a0c3-never-print-me"
DEADLINE_SECONDS = 60.0  # only a failing test waits this long
# LC_ALL stops Python's locale coercion from adding LC_CTYPE: the child's environment is then exactly this.
BASE_ENV = {"LC_ALL": "C.UTF-8", "PATH": os.defpath}
# The list, written out here so that a signal dropped from the module's list fails the test.
SIX = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
CHILD_NAME = Path(sys.executable).name  # how the supervisor's log lines name the command
PID1_REASON = "needs `unshare --pid --fork --mount-proc` (util-linux, and root or user namespaces)"

# The child. argv: RECORD MODE [ARGS]; it appends one JSON line per event to RECORD, its handlers are in
# place before its "start" line is written, and it never prints anything.
CHILD = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

record, mode, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
SIX = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"]
received = []

def note(**event):
    event["pid"] = os.getpid()
    with record.open("a") as out:
        out.write(json.dumps(event) + "\n")

def on_signal(signum, frame):
    name = signal.Signals(signum).name
    received.append(name)
    note(event="signal", name=name)
    if mode == "signals" and len(received) == len(SIX):
        sys.exit(0)
    if mode == "term-twice" and received.count("SIGTERM") == 2:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

def state(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 1:].split()[0]

if mode == "signals":
    for name in SIX:
        signal.signal(getattr(signal, name), on_signal)
if mode in ("ignore-term", "term-twice"):
    signal.signal(signal.SIGTERM, on_signal)
note(event="start", env=dict(os.environ), argv=sys.argv, parent=os.getppid())
if mode == "exit":
    sys.exit(int(args[0]))
if mode == "kill":
    os.kill(os.getpid(), getattr(signal, args[0]))
if mode == "orphans":
    # Each `sh` starts a short sleep in the background and exits: the sleep is orphaned to PID 1 and
    # becomes a zombie there when it ends, unless PID 1 reaps it.
    count, wait = int(args[0]), float(args[1])
    script = "sleep 0.2 >/dev/null 2>&1 & echo $!"
    orphans = [int(subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout)
               for _ in range(count)]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(state(pid) is not None for pid in orphans):
        time.sleep(0.05)
    zombies = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and state(p.name) == "Z"]
    left = [pid for pid in orphans if state(pid) is not None]
    note(event="orphans", orphans=orphans, left=left, zombies=zombies)
    sys.exit(42 if not zombies and not left else 43)
while True:
    time.sleep(3600)
"""
ORPHANS_REAPED, ORPHANS_LEFT = 42, 43


@dataclass
class Supervised:
    """A driver process running ``supervise`` over the child, and the files it leaves."""

    process: subprocess.Popen[bytes]
    record: Path
    changes_dir: Path
    output: Path

    def events(self, kind: str) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text().splitlines()
        return [event for event in map(json.loads, lines) if event["event"] == kind]

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not done():
            assert self.process.poll() is None or done(), f"driver exited before {what}: {self.log()}"
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE_SECONDS} s: {self.log()}"
            time.sleep(0.02)

    def wait_for_starts(self, count: int) -> list[dict[str, Any]]:
        self.wait_for(f"{count} start(s) of the child", lambda: len(self.events("start")) >= count)
        return self.events("start")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def change(self, number: int, env: dict[str, str]) -> None:
        write_change(self.changes_dir, number, env)

    def finish(self) -> int:
        return self.process.wait(DEADLINE_SECONDS)

    def log(self) -> str:
        return self.output.read_text() if self.output.exists() else ""


Launch = Callable[..., Supervised]


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Launch]:
    """Starts drivers (``launch(mode, *args, env=..., on_change=..., grace=..., prefix=[...])``); each is
    stopped at the end of the test, its child with it (SIGTERM is forwarded; SIGKILL after that)."""
    started: list[Supervised] = []
    child = tmp_path / "child.py"
    child.write_text(CHILD)

    def launch(
        mode: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        on_change: OnChange = "restart",
        grace: float = 30.0,
        prefix: tuple[str, ...] = (),
        driver: tuple[str, ...] = (sys.executable, "-m", "tests.support.supervisor_driver"),
    ) -> Supervised:
        number = len(started) + 1
        record, changes_dir = tmp_path / f"record-{number}.jsonl", tmp_path / f"changes-{number}"
        changes_dir.mkdir()
        config = tmp_path / f"config-{number}.json"
        config.write_text(
            json.dumps(
                {
                    "command": [sys.executable, str(child), str(record), mode, *args],
                    "env": dict(BASE_ENV if env is None else env),
                    "on_change": on_change,
                    "grace_seconds": grace,
                    "changes_dir": str(changes_dir),
                }
            )
        )
        output = tmp_path / f"output-{number}.log"
        with output.open("wb") as out:
            process = subprocess.Popen(
                [*prefix, *driver, str(config)], cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        started.append(Supervised(process, record, changes_dir, output))
        return started[-1]

    try:
        yield launch
    finally:
        for run in started:
            stop_process(run.process, timeout=10)
            # A driver killed by the line above leaves its child behind (SIGKILL cannot be forwarded).
            for start in run.events("start"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(start["pid"], signal.SIGKILL)


def exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- Signals and exit status. ---------------------------------------------------------------------------


def test_each_of_the_six_signals_reaches_the_child(supervised: Launch) -> None:
    """SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the supervisor reach the child."""
    run = supervised("signals")
    run.wait_for_starts(1)
    for number, signum in enumerate(SIX, start=1):
        run.signal(signum)
        run.wait_for(f"{signum.name} in the child", lambda: len(run.events("signal")) >= number)  # noqa: B023
    assert [event["name"] for event in run.events("signal")] == [s.name for s in SIX]
    assert run.finish() == 0  # the child exits 0 once it has all six
    assert len(run.events("start")) == 1


@pytest.mark.parametrize(
    ("mode", "args", "status"),
    [
        ("exit", ("0",), 0),
        ("exit", ("3",), 3),
        ("kill", ("SIGKILL",), 128 + signal.SIGKILL),
        ("kill", ("SIGABRT",), 128 + signal.SIGABRT),
    ],
)
def test_the_childs_exit_status_is_the_supervisors(
    supervised: Launch, mode: str, args: tuple[str, ...], status: int
) -> None:
    """A child that exits on its own: its exit code, or 128 + N when signal N killed it."""
    run = supervised(mode, *args)
    assert run.finish() == status
    assert len(run.events("start")) == 1


def test_sigterm_from_kubernetes_stops_the_child_and_gives_143(supervised: Launch) -> None:
    """The pod's SIGTERM is forwarded; a child that dies of it makes the supervisor exit 128 + 15."""
    run = supervised("sleep")
    (start,) = run.wait_for_starts(1)
    run.signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    assert not exists(start["pid"])
    assert f"forwarding SIGTERM to {CHILD_NAME}" in run.log()


# --- Changes: restart, exit, grace. ---------------------------------------------------------------------


def test_each_change_restarts_the_child_once_with_exactly_the_new_environment(supervised: Launch) -> None:
    """Two changes: three starts, each with exactly the environment given, the old child gone first."""
    envs = [{**BASE_ENV, "GTC_TEST_VALUE": f"v{n}"} for n in (1, 2, 3)]
    run = supervised("sleep", env=envs[0])
    run.wait_for_starts(1)
    run.change(1, envs[1])
    run.wait_for_starts(2)
    run.change(2, envs[2])
    starts = run.wait_for_starts(3)
    run.signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    # The driver is gone: no start can come after this count.
    starts = run.events("start")
    assert [start["env"] for start in starts] == envs
    assert len({start["pid"] for start in starts}) == 3
    assert not any(exists(start["pid"]) for start in starts)
    assert run.log().count(f"secrets changed: restarting {CHILD_NAME}") == 2


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(supervised: Launch) -> None:
    """At a restart the child gets SIGTERM, ignores it, and is SIGKILLed after --grace; then the new one."""
    # term-twice: the first SIGTERM is ignored, so that the test can end the second child with two.
    run = supervised("term-twice", env={**BASE_ENV, "GTC_TEST_VALUE": "v1"}, grace=0.5)
    (first,) = run.wait_for_starts(1)
    run.change(1, {**BASE_ENV, "GTC_TEST_VALUE": "v2"})
    starts = run.wait_for_starts(2)
    assert starts[1]["env"]["GTC_TEST_VALUE"] == "v2"
    assert [(e["pid"], e["name"]) for e in run.events("signal")] == [(first["pid"], "SIGTERM")]
    assert not exists(first["pid"])
    assert f"{CHILD_NAME} (pid {first['pid']}) still running 0.5 s after SIGTERM: SIGKILL" in run.log()
    run.signal(signal.SIGTERM)
    run.wait_for("the second child's first SIGTERM", lambda: len(run.events("signal")) == 2)
    run.signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM


def test_on_change_exit_stops_the_child_and_returns_75(supervised: Launch) -> None:
    """--on-change exit: the child is stopped (SIGKILL after grace if need be), the supervisor exits 75."""
    run = supervised("ignore-term", on_change="exit", grace=0.5)
    (start,) = run.wait_for_starts(1)
    run.change(1, {**BASE_ENV, "GTC_TEST_VALUE": "v2"})
    assert run.finish() == EXIT_SECRETS_CHANGED == 75
    assert len(run.events("start")) == 1
    assert not exists(start["pid"])
    assert "SIGKILL" in run.log()


def test_a_stop_signal_during_a_restart_stops_without_starting_a_new_child(supervised: Launch) -> None:
    """SIGTERM to the supervisor while the old child is stopping: forwarded, and no new child starts."""
    # The child ignores the restart's SIGTERM and dies of the second one (the forwarded one), so the long
    # grace is never waited for.
    run = supervised("term-twice", grace=DEADLINE_SECONDS)
    run.wait_for_starts(1)
    run.change(1, {**BASE_ENV, "GTC_TEST_VALUE": "v2"})
    run.wait_for("the restart's SIGTERM in the child", lambda: len(run.events("signal")) == 1)
    run.signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    assert len(run.events("start")) == 1
    assert [e["name"] for e in run.events("signal")] == ["SIGTERM", "SIGTERM"]
    assert "not restarted: asked to stop" in run.log()


def test_a_change_after_sigterm_leaves_the_stopping_child_alone(supervised: Launch) -> None:
    """The pod is stopping (SIGTERM forwarded, the child shutting down): a change restarts nothing."""
    run = supervised("term-twice", grace=DEADLINE_SECONDS)
    run.wait_for_starts(1)
    run.signal(signal.SIGTERM)  # the child notes it and keeps going, as one that drains its work
    run.wait_for("the forwarded SIGTERM in the child", lambda: len(run.events("signal")) == 1)
    run.change(1, {**BASE_ENV, "GTC_TEST_VALUE": "v2"})
    run.wait_for("the change to be seen", lambda: "is stopping (SIGTERM): not restarted" in run.log())
    run.signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    assert len(run.events("start")) == 1
    # Both SIGTERMs are the forwarded ones: the change sent none.
    assert [e["name"] for e in run.events("signal")] == ["SIGTERM", "SIGTERM"]


# --- No value in argv or logs. --------------------------------------------------------------------------


def test_no_value_in_the_supervisors_output_or_any_argv(supervised: Launch) -> None:
    """The canary is in the child's environment only: not in the logs (DEBUG), not in either argv."""
    # grace: this child outlives the restart's SIGTERM (it only notes it) and is SIGKILLed.
    run = supervised("signals", env={**BASE_ENV, "GTC_TOKEN": CANARY}, grace=0.5)
    (first,) = run.wait_for_starts(1)
    run.change(1, {**BASE_ENV, "GTC_TOKEN": CANARY_ROTATED})
    starts = run.wait_for_starts(2)
    argvs = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in (run.process.pid, starts[1]["pid"])]
    for signum in SIX:
        run.signal(signum)
    assert run.finish() == 0
    assert [start["env"]["GTC_TOKEN"] for start in starts] == [CANARY, CANARY_ROTATED]
    for canary in (CANARY, CANARY_ROTATED):
        assert canary not in run.log()
        assert all(canary.encode() not in argv for argv in argvs)
        assert all(canary not in " ".join(start["argv"]) for start in starts)
    assert f"started {CHILD_NAME} (pid {first['pid']})" in run.log()


# --- PID 1: orphans. ------------------------------------------------------------------------------------


def unshare_pid1() -> tuple[str, ...]:
    """The prefix that runs a command as PID 1 of a new PID namespace; skips the test when not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip(f"orphan reaping as PID 1 not tested: no unshare command; {PID1_REASON}")
    prefix = (unshare, "--pid", "--fork", "--mount-proc")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(
            f"orphan reaping as PID 1 not tested: unshare refused ({probe.stderr.strip()}); {PID1_REASON}"
        )
    return prefix


def test_orphans_are_reaped_when_the_supervisor_is_pid_1(supervised: Launch) -> None:
    """As PID 1, every orphan the child leaves is reaped (no zombie in the namespace), and the child's own
    exit status still comes through (its status is not stolen by the reaping)."""
    # The child gives up after 20 s, well before the driver is waited for (a failure then reads clearly).
    run = supervised("orphans", "5", "20", prefix=unshare_pid1())
    assert run.finish() == ORPHANS_REAPED, run.log()
    (start,) = run.events("start")
    assert start["parent"] == 1  # the supervisor really was PID 1
    (report,) = run.events("orphans")
    assert len(report["orphans"]) == 5
    assert report["left"] == report["zombies"] == []


def test_the_orphan_check_sees_zombies_under_a_pid_1_that_does_not_reap(supervised: Launch) -> None:
    """Control for the test above: under a PID 1 that only waits for its own child, the zombies are seen."""
    only_its_own = (
        sys.executable,
        "-c",
        "import json, subprocess, sys; config = json.load(open(sys.argv[1]));"
        " sys.exit(subprocess.call(config['command'], env=config['env']))",
    )
    run = supervised("orphans", "2", "1", prefix=unshare_pid1(), driver=only_its_own)
    assert run.finish() == ORPHANS_LEFT, run.log()
    (report,) = run.events("orphans")
    assert sorted(report["zombies"]) == sorted(report["orphans"])


# --- In this process: errors and the end of the changes. ------------------------------------------------


async def test_a_command_that_cannot_start_raises_and_the_signal_handlers_are_put_back(
    tmp_path: Path,
) -> None:
    """FileNotFoundError for the caller to map (127), and the caller's signal handlers are restored."""

    def callers_handler(signum: int, frame: object) -> None:
        """A handler of the caller's own, which asyncio would otherwise replace with SIG_DFL."""

    async def no_changes() -> AsyncIterator[Mapping[str, str]]:
        return
        yield  # pragma: no cover - makes this an async generator

    previous = signal.signal(signal.SIGUSR1, callers_handler)
    try:
        before = {signum: signal.getsignal(signum) for signum in SIX}
        with pytest.raises(FileNotFoundError):
            await supervise(
                [str(tmp_path / "missing")], BASE_ENV, no_changes(), on_change="restart", grace_seconds=1
            )
        assert {signum: signal.getsignal(signum) for signum in SIX} == before
        assert signal.getsignal(signal.SIGUSR1) is callers_handler
    finally:
        signal.signal(signal.SIGUSR1, previous)


async def test_a_failing_watch_leaves_the_child_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The changes iterator fails: logged, and the child keeps running until it exits on its own."""
    release = tmp_path / "release"
    waits = (
        f"import pathlib, time\nwhile not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)\n"
        "raise SystemExit(5)\n"
    )

    async def failing() -> AsyncIterator[Mapping[str, str]]:
        raise RuntimeError("the watcher broke")
        yield  # pragma: no cover - makes this an async generator

    caplog.set_level(logging.INFO, logger="gtc_secrets.supervisor")
    task = asyncio.create_task(
        supervise([sys.executable, "-c", waits], BASE_ENV, failing(), on_change="restart", grace_seconds=1)
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    while "watching the secrets failed" not in caplog.text:
        assert not task.done() and time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.02)
    release.touch()
    assert await task == 5


async def test_the_watch_can_be_closed_as_soon_as_the_child_has_exited() -> None:
    """supervise lets its cancelled read of ``changes`` unwind before it returns: the caller can close the
    generator at once (it would otherwise still be running: "asynchronous generator is already running")."""
    closed = asyncio.Event()

    async def watching() -> AsyncGenerator[Mapping[str, str], None]:
        try:
            await asyncio.Event().wait()  # no change ever comes
            yield {}
        finally:
            closed.set()

    changes = watching()
    status = await supervise(
        [sys.executable, "-c", "raise SystemExit(4)"], BASE_ENV, changes, on_change="restart", grace_seconds=1
    )
    assert status == 4
    await changes.aclose()
    assert closed.is_set()


async def test_a_signal_that_comes_while_the_child_is_starting_reaches_it(tmp_path: Path) -> None:
    """A pod's SIGTERM at boot, before the child's pid is known, is held and passed on, not lost.

    This drives the private ``_Supervisor`` because the window is inside asyncio's process creation: the
    callback below runs at the first point where ``start`` awaits, while no child exists yet.
    """
    record = tmp_path / "record.jsonl"
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    supervisor = _Supervisor([sys.executable, str(child), str(record), "sleep"], grace_seconds=1)
    asyncio.get_running_loop().call_soon(supervisor.forward, signal.SIGUSR1)
    process = await supervisor.start(BASE_ENV)
    try:
        # The child has no handler for SIGUSR1: it dies of it (a lost signal would leave it sleeping).
        status = await asyncio.wait_for(supervisor.wait(process), DEADLINE_SECONDS)
        assert status == 128 + signal.SIGUSR1
    finally:
        await supervisor.stop(process)
