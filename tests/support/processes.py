"""Stopping a child process that a test or a benchmark started: every server it starts, it stops."""

from __future__ import annotations

import signal
import subprocess


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    timeout: float,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> int:
    """Send ``stop_signal`` and wait ``timeout`` seconds; SIGKILL if it is still running. The exit code.

    Safe on a process that has already exited. A child that ignores SIGKILL cannot exist, but one that the
    kernel takes long to reap can: the wait after the kill is bounded too, so a test never hangs here.
    """
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return int(process.returncode)
