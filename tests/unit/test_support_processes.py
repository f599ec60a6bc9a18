"""tests/support/processes.py: how every test and benchmark stops what it started."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support.processes import stop_process

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _start(code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline() == "ready\n"  # its signal handler is installed
    return process


def test_a_process_that_stops_on_sigterm_gives_its_exit_code() -> None:
    process = _start("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    assert stop_process(process, timeout=10) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    process = _start(IGNORES_SIGTERM)
    assert stop_process(process, timeout=0.5) == -signal.SIGKILL


def test_the_signal_can_be_chosen_and_an_exited_process_is_left_alone() -> None:
    process = _start(IGNORES_SIGTERM)
    assert stop_process(process, timeout=10, stop_signal=signal.SIGINT) != 0  # KeyboardInterrupt
    assert stop_process(process, timeout=10) == process.returncode
