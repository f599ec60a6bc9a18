"""The parent of a watched worker (``gtc-secrets exec --watch``): start it, pass signals on, restart it.

Without ``--watch`` the runtime replaces itself with the worker (``execvpe``). With it, the runtime stays
as the worker's parent, the way Vault Agent's process supervisor mode does, so it can restart the worker
when a secret changes. It then has the duties of an init process too: signals sent to the pod reach it,
not the worker, so it forwards them; as PID 1 of a container it inherits every orphan and must reap them,
or they stay zombies until the pod dies.

Secret values reach the child through its environment only: they are never in argv (``/proc/PID/cmdline``
is world-readable) and never logged; log lines name the command's basename and pids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

OnChange = Literal["restart", "exit"]
EXIT_SECRETS_CHANGED: Final = 75  # --on-change exit: the secrets changed; Kubernetes restarts the container

# What a container's init passes on (tini, dumb-init and Vault Agent forward the same ones).
FORWARDED_SIGNALS: Final = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# Of those, the ones that mean the pod (or the user at a terminal) is stopping the worker: after one, no new
# child is ever started (not at a restart under way, not for a later change) and a child shutting down is
# left to finish. SIGQUIT is not one: the JVM and others take it as "dump your threads" and keep running.
STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT})
# The shell convention (and Kubernetes' "exit code 137" for SIGKILL): killed by signal N -> 128 + N.
SIGNAL_EXIT_BASE: Final = 128
PROC: Final = Path("/proc")


def exit_status(returncode: int) -> int:
    """The status a shell reports for a child: its exit code, or 128 + N when signal N killed it.

    asyncio (like subprocess) reports death by signal N as ``-N``.
    """
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


def parent_pid(stat: str) -> int:
    """The parent pid field of a ``/proc/PID/stat`` line.

    The command name (field 2) is in parentheses and may itself contain spaces and parentheses, so the
    fields are counted after the LAST closing parenthesis: state, then ppid.
    """
    fields = stat[stat.rindex(")") + 1 :].split()
    return int(fields[1])


def orphans(stats: Iterable[tuple[int, str]], me: int, ours: frozenset[int]) -> list[int]:
    """The pids among ``(pid, /proc/PID/stat)`` that are children of ``me`` and not one we started.

    Our own children are left to asyncio, which waits for them by pid: reaping one here would steal its
    exit status (asyncio would then report 255).
    """
    return sorted(pid for pid, stat in stats if pid not in ours and parent_pid(stat) == me)


def _read_stats(proc: Path) -> Iterable[tuple[int, str]]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone between the listing and the read


class _Supervisor:
    """One supervised command: the current child, signal forwarding and orphan reaping."""

    def __init__(self, command: Sequence[str], grace_seconds: float) -> None:
        self.command = list(command)
        self.name = os.path.basename(command[0])
        self.grace_seconds = grace_seconds
        self.child: asyncio.subprocess.Process | None = None
        # Pids we started that asyncio has not reaped yet (a restart briefly has two).
        self.ours: set[int] = set()
        self.stop_signal: signal.Signals | None = None
        # While a child is being started its pid is not known yet: a SIGCHLD then waits, or a child that
        # dies at once could be taken for an orphan and its status stolen.
        self.starting = False
        self.reap_pending = False
        # Signals that came while a child was being started: it gets them once it exists (a pod's SIGTERM
        # must not be lost because it came at boot).
        self.pending: list[signal.Signals] = []

    async def start(self, env: Mapping[str, str]) -> asyncio.subprocess.Process:
        self.starting = True
        try:
            # No shell, argv as given, stdio inherited (None): the worker's output is its own, not copied.
            child = await asyncio.create_subprocess_exec(*self.command, env=dict(env))
            self.child = child
            self.ours.add(child.pid)
        finally:
            self.starting = False
        log.info("started %s (pid %d)", self.name, child.pid)
        pending, self.pending = self.pending, []
        for signum in pending:
            self.forward(signum)
        if self.reap_pending:
            self.reap_orphans()
        return child

    async def wait(self, child: asyncio.subprocess.Process) -> int:
        returncode = await child.wait()
        self.ours.discard(child.pid)
        return exit_status(returncode)

    async def stop(self, child: asyncio.subprocess.Process) -> int:
        """SIGTERM, ``grace_seconds`` to exit, then SIGKILL. The child's status."""
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            return await asyncio.wait_for(self.wait(child), self.grace_seconds)
        except TimeoutError:
            log.warning(
                "%s (pid %d) still running %.1f s after SIGTERM: SIGKILL",
                self.name,
                child.pid,
                self.grace_seconds,
            )
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            return await self.wait(child)

    def forward(self, signum: signal.Signals) -> None:
        if signum in STOP_SIGNALS:
            self.stop_signal = signum
        if self.starting:
            self.pending.append(signum)
            return
        child = self.child
        if child is None or child.returncode is not None:
            log.info("%s received with no child running", signum.name)
            return
        log.info("forwarding %s to %s (pid %d)", signum.name, self.name, child.pid)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    def reap_orphans(self, proc: Path = PROC) -> None:
        """On SIGCHLD as PID 1: wait for every child we did not start (without blocking)."""
        if self.starting:
            self.reap_pending = True
            return
        self.reap_pending = False
        try:
            candidates = orphans(_read_stats(proc), os.getpid(), frozenset(self.ours))
        except OSError as exc:
            log.warning("cannot list processes in %s to reap orphans: %s", proc, exc)
            return
        for pid in candidates:
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # reaped already (or not a child after all)
            if reaped:
                log.debug("reaped orphan pid %d (status %d)", pid, os.waitstatus_to_exitcode(status))


async def supervise(
    command: Sequence[str],
    env: Mapping[str, str],
    changes: AsyncIterator[Mapping[str, str]],
    *,
    on_change: OnChange,
    grace_seconds: float,
) -> int:
    """Start ``command`` as a child with exactly ``env`` (stdin/stdout/stderr inherited), forward SIGTERM,
    SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 to it, reap orphans when this process is PID 1. For every
    environment ``changes`` yields: on_change "restart" -> SIGTERM the child, wait grace_seconds, SIGKILL,
    start it again with the new env; "exit" -> stop the child the same way and return EXIT_SECRETS_CHANGED.
    Returns the child's status when it exits on its own (its exit code, or 128 + signal number).

    Must run in the main thread (signal handlers). Raises ``OSError`` (``FileNotFoundError``,
    ``PermissionError``) when the command cannot be started, at boot or at a restart. After SIGTERM or
    SIGINT no new child is started: one that comes during a restart is forwarded to the stopping child and
    the status of that child is returned; a change that comes after one is not acted on (the child may be
    shutting down). When ``changes`` ends or fails, the child keeps running unwatched (a failure is logged).

    """
    loop = asyncio.get_running_loop()
    supervisor = _Supervisor(command, grace_seconds)
    handled: list[tuple[signal.Signals, Callable[[int, FrameType | None], Any] | int | None]] = []
    try:
        for signum in FORWARDED_SIGNALS:
            handled.append((signum, signal.getsignal(signum)))
            loop.add_signal_handler(signum, supervisor.forward, signum)
        if os.getpid() == 1:
            handled.append((signal.SIGCHLD, signal.getsignal(signal.SIGCHLD)))
            loop.add_signal_handler(signal.SIGCHLD, supervisor.reap_orphans)
        return await _run(supervisor, env, changes, on_change)
    finally:
        for signum, previous in handled:
            loop.remove_signal_handler(signum)
            # remove_signal_handler leaves SIG_DFL; put back what the caller had.
            signal.signal(signum, previous)


async def _run(
    supervisor: _Supervisor,
    env: Mapping[str, str],
    changes: AsyncIterator[Mapping[str, str]],
    on_change: OnChange,
) -> int:
    child = await supervisor.start(env)
    exited: asyncio.Task[int] = asyncio.create_task(supervisor.wait(child))
    changed: asyncio.Task[Mapping[str, str]] | None = asyncio.create_task(_next(changes))
    try:
        while True:
            waiting: set[asyncio.Task[int] | asyncio.Task[Mapping[str, str]]] = {exited}
            if changed is not None:
                waiting.add(changed)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                status = exited.result()
                log.info("%s (pid %d) exited with status %d", supervisor.name, child.pid, status)
                return status
            assert changed is not None  # only the two tasks can finish the wait
            try:
                new_env = changed.result()
            except StopAsyncIteration:
                log.info("no more secret changes to watch; %s keeps running", supervisor.name)
                changed = None
                continue
            except Exception:
                log.exception("watching the secrets failed; %s keeps running unwatched", supervisor.name)
                changed = None
                continue
            if supervisor.stop_signal is not None:
                log.info(
                    "secrets changed, but %s (pid %d) is stopping (%s): not restarted, no longer watched",
                    supervisor.name,
                    child.pid,
                    supervisor.stop_signal.name,
                )
                changed = None
                continue
            log.info(
                "secrets changed: %s %s (pid %d)",
                "restarting" if on_change == "restart" else "stopping",
                supervisor.name,
                child.pid,
            )
            exited.cancel()
            status = await supervisor.stop(child)
            if on_change == "exit":
                log.info(
                    "%s stopped (status %d); exiting with %d", supervisor.name, status, EXIT_SECRETS_CHANGED
                )
                return EXIT_SECRETS_CHANGED
            if supervisor.stop_signal is not None:
                log.info("%s stopped (status %d) and not restarted: asked to stop", supervisor.name, status)
                return status
            child = await supervisor.start(new_env)
            exited = asyncio.create_task(supervisor.wait(child))
            changed = asyncio.create_task(_next(changes))
    finally:
        pending = [task for task in (changed, exited) if task is not None and not task.done()]
        for task in pending:
            task.cancel()
        # Let the cancelled read of ``changes`` unwind now, so the caller can close its generator at once.
        await asyncio.gather(*pending, return_exceptions=True)
        if child.returncode is None:
            # Only on an error or a cancellation of supervise itself: never leave the worker behind.
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def _next(changes: AsyncIterator[Mapping[str, str]]) -> Mapping[str, str]:
    return await anext(changes)
