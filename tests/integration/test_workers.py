"""``gtc-admission serve --workers 2``: two real processes on one port over real TLS on 127.0.0.1.

Which process answered is read from the ``X-Gtc-Admission-Pid`` header every response carries. Processes
are found in /proc (Linux, like SO_REUSEPORT's load balancing itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gtc_admission.server import PID_HEADER
from tests.integration.webhook_fixtures import ROOT, WebhookProcess, running_webhook

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; SO_REUSEPORT balancing"),
]

EXAMPLE_REVIEW = ROOT / "examples" / "worker-pod-review.json"
WORKERS = 2
# New connections are spread by a hash of their addresses: 64 of them all reaching one of two workers
# has a probability of 2**-63.
MAX_CONNECTIONS = 64
STOP_TIMEOUT = 30.0
# A worker polls for its supervisor every second; this leaves room for a loaded machine.
ORPHAN_TIMEOUT = 15.0


def review(uid: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(EXAMPLE_REVIEW.read_text())
    body["request"]["uid"] = uid
    return body


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running or sleeping: a zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (the workers, and multiprocessing's resource tracker)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] != "Z":
                parents[int(entry.name)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def metric(webhook: WebhookProcess, name: str) -> float:
    """The sum of every sample called ``name`` in /metrics (whichever worker answers the scrape)."""
    text = webhook.request("GET", "/metrics", content_type=None).body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def post_until_every_worker_answered(webhook: WebhookProcess, prefix: str) -> dict[str, set[str]]:
    """Reviews on new connections until every worker answered one: {pid: uids it answered}."""
    answered: dict[str, set[str]] = {}
    for index in range(MAX_CONNECTIONS):
        uid = f"{prefix}-{index}"
        result = webhook.post_json("/mutate", review(uid))
        assert result.status == 200, result.body
        response = result.json()["response"]
        assert response["uid"] == uid
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        answered.setdefault(result.headers[PID_HEADER], set()).add(uid)
        if len(answered) == WORKERS:
            return answered
    raise AssertionError(f"{MAX_CONNECTIONS} connections all reached the same worker: {sorted(answered)}")


def worker_pids(webhook: WebhookProcess) -> set[int]:
    """The supervisor's children that are workers (multiprocessing also starts a resource tracker)."""
    found: set[int] = set()
    for pid in descendants(webhook.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        stat = _stat(pid)
        if stat is not None and stat[1] == webhook.process.pid and b"spawn_main" in command:
            found.add(pid)
    return found


@contextlib.contextmanager
def serving_two_workers(workdir: Path) -> Iterator[WebhookProcess]:
    """``serve --workers 2`` with the self-signed certificate the supervisor generates (one for both)."""
    with running_webhook(workdir, extra_args=["--workers", str(WORKERS)]) as webhook:
        wait_for(lambda: len(worker_pids(webhook)) == WORKERS, STOP_TIMEOUT, "two worker processes")
        yield webhook


@pytest.fixture(scope="module")
def shared_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """One server for the tests that leave it running."""
    with serving_two_workers(tmp_path_factory.mktemp("webhook")) as webhook:
        yield webhook


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[WebhookProcess]:
    """A server of its own, for a test that stops or kills it."""
    with serving_two_workers(tmp_path / "webhook") as webhook:
        yield webhook


def test_both_workers_answer_on_one_port(shared_workers: WebhookProcess) -> None:
    """New connections to the one port reach both workers, children of the server process, over one CA."""
    answered = post_until_every_worker_answered(shared_workers, "spread")
    assert {int(pid) for pid in answered} == worker_pids(shared_workers)
    assert str(shared_workers.process.pid) not in answered  # the supervisor serves nothing itself


def test_metrics_and_audit_cover_every_worker(shared_workers: WebhookProcess) -> None:
    """/metrics from any worker counts the reviews of all of them; every review has its audit line."""
    reviews = "gtc_admission_review_duration_seconds_count"
    before = metric(shared_workers, reviews)
    answered = post_until_every_worker_answered(shared_workers, "counted")
    sent = sum(len(uids) for uids in answered.values())
    # Scrape several times: whichever worker answers, the sum is the same.
    for _ in range(6):
        assert metric(shared_workers, reviews) - before == sent
    audited = {record["uid"] for record in shared_workers.audit_records()}
    assert set().union(*answered.values()) <= audited


def test_sigterm_stops_every_worker(two_workers: WebhookProcess) -> None:
    """SIGTERM to the server: every worker stops, the server exits 0, no process is left behind."""
    post_until_every_worker_answered(two_workers, "before-stop")
    below = descendants(two_workers.process.pid)
    assert len(below) >= WORKERS
    two_workers.process.send_signal(signal.SIGTERM)
    assert two_workers.process.wait(STOP_TIMEOUT) == 0
    wait_for(lambda: not any(alive(pid) for pid in below), ORPHAN_TIMEOUT, "every worker to exit")
    stderr = two_workers.stderr()
    assert "SIGTERM: stopping 2 worker(s)" in stderr
    assert stderr.count("stopped") >= WORKERS
    with pytest.raises(OSError):
        two_workers.request("GET", "/healthz", content_type=None)


def test_sigint_stops_every_worker(two_workers: WebhookProcess) -> None:
    """SIGINT (Ctrl-C) to the server is forwarded like SIGTERM: exit 0, no process left."""
    below = descendants(two_workers.process.pid)
    two_workers.process.send_signal(signal.SIGINT)
    assert two_workers.process.wait(STOP_TIMEOUT) == 0
    wait_for(lambda: not any(alive(pid) for pid in below), ORPHAN_TIMEOUT, "every worker to exit")


def test_a_dead_worker_stops_the_server_with_an_error(two_workers: WebhookProcess) -> None:
    """A worker killed from outside: the server stops the other one and exits non-zero."""
    below = descendants(two_workers.process.pid)
    victim, *_ = sorted(worker_pids(two_workers))
    os.kill(victim, signal.SIGKILL)
    assert two_workers.process.wait(STOP_TIMEOUT) == 1
    wait_for(lambda: not any(alive(pid) for pid in below), ORPHAN_TIMEOUT, "every worker to exit")
    assert f"(pid {victim}) exited on its own with -9: stopping the others" in two_workers.stderr()


def test_killed_supervisor_leaves_no_orphan(two_workers: WebhookProcess) -> None:
    """SIGKILL to the server (it cannot forward anything): the workers notice and exit on their own."""
    below = descendants(two_workers.process.pid)
    two_workers.process.kill()
    two_workers.process.wait(STOP_TIMEOUT)
    wait_for(lambda: not any(alive(pid) for pid in below), ORPHAN_TIMEOUT, "the orphaned workers to exit")
    assert "is gone: stopping this worker" in two_workers.stderr()
