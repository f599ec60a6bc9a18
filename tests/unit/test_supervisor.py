"""The pure parts of gtc_secrets.supervisor: exit statuses and which processes are orphans to reap.

The processes themselves are in tests/integration/test_supervisor.py.
"""

from __future__ import annotations

import signal

import pytest

from gtc_secrets.supervisor import exit_status, orphans, parent_pid


@pytest.mark.parametrize(
    ("returncode", "status"),
    [
        (0, 0),
        (1, 1),
        (75, 75),
        (255, 255),
        (-signal.SIGTERM, 143),
        (-signal.SIGKILL, 137),
        (-signal.SIGINT, 130),
    ],
)
def test_exit_status_is_the_code_or_128_plus_the_signal(returncode: int, status: int) -> None:
    """asyncio's -N for "killed by signal N" becomes the shell's 128 + N; codes pass unchanged."""
    assert exit_status(returncode) == status


@pytest.mark.parametrize(
    ("stat", "ppid"),
    [
        ("1234 (sleep) Z 1 1234 1 0 -1 4194564 0 0", 1),
        ("77 (my (odd) name) S 40 77 40 0 -1", 40),  # parentheses in the command name
        ("78 (a ) R 9 b) S 41 78", 41),  # ") R 9" inside the name: the LAST ")" ends it
    ],
)
def test_parent_pid_is_read_after_the_last_parenthesis(stat: str, ppid: int) -> None:
    """The command name may hold spaces and parentheses (a process names itself); it cannot shift fields."""
    assert parent_pid(stat) == ppid


def test_orphans_are_our_children_that_we_did_not_start() -> None:
    """Our own children are asyncio's to wait for (their status); other processes are not ours to reap."""
    stats = [
        (1, "1 (python3) S 0 1 1"),  # ourselves
        (10, "10 (worker) S 1 10 1"),  # the child we started
        (11, "11 (sleep) Z 1 11 1"),  # an orphan, now a zombie
        (12, "12 (sh) S 1 12 1"),  # an orphan still running (a no-op wait)
        (13, "13 (sleep) Z 10 13 1"),  # the worker's own child: the worker reaps it
    ]
    assert orphans(stats, me=1, ours=frozenset({10})) == [11, 12]
    assert orphans(stats, me=1, ours=frozenset({10, 11, 12})) == []
