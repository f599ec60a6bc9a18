"""``make demo`` end to end: the demo runs as ``make demo`` runs it (the venv's python, ``-m demo.run_demo``
from the repository root), with a canary value planted through ``--secret-file``.

Each run is its own session (``start_new_session``), so that the tests can check that the demo leaves no
process behind (OpenBao, the webhook, the CLIs all inherit the session), also when a step fails or it is
stopped with SIGTERM; if one is left anyway, the test kills that process group (its own) after failing.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from demo.run_demo import HASH_PREFIX, STEPS

from tests.integration.webhook_fixtures import ROOT

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 240.0
LEFTOVER_GRACE_S = 5.0
# Cluster and Vault settings of the developer's shell must not change what the demo does.
DROPPED_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
DROPPED_PREFIXES = ("VAULT_", "BAO_")
WORKDIR_LINE = re.compile(r"^ {4}working directory: (\S+)", re.MULTILINE)
HEADING = re.compile(r"^=== Step (\d)/(\d): (.*) ===$", re.MULTILINE)


@dataclass
class DemoRun:
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    leftovers: list[str] | None = None

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_for(self, needle: str, timeout: float) -> None:
        """Read output until a line contains ``needle`` (the reader thread feeds ``lines``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
            if needle in line:
                return
        pytest.fail(f"the demo never printed {needle!r}:\n{self.text}")

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> int:
        """Wait for the exit code, collect the rest of the output, and note which processes of the
        demo's session are still alive (before ``demo`` kills them, so that tests can see them)."""
        code = self.process.wait(timeout)
        while (line := self.lines.get(timeout=10)) is not None:
            self.output.append(line)
        # A process the demo stopped may take a moment to be reaped by init after the demo exits.
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while (leftovers := session_processes(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.leftovers = leftovers
        return code


def demo_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in DROPPED_ENV and not name.startswith(DROPPED_PREFIXES)
    }


def session_processes(session: int) -> list[str]:
    """``pid comm`` of every live process of ``session`` (read from /proc: no ps needed)."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields: state ppid pgrp session ...; a zombie is already dead, just not yet reaped.
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(f"{entry.name} {comm}")
    return found


@contextmanager
def demo(*args: str) -> Iterator[DemoRun]:
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.run_demo", *args],
        cwd=ROOT,
        env=demo_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = DemoRun(process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            run.lines.put(line)
        run.lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield run
    finally:
        leftovers = session_processes(process.pid)
        if process.poll() is None or leftovers:
            # The demo's own process group (the session leader's): only what this test started.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def assert_left_nothing(run: DemoRun, *, workdir_kept: bool = False) -> Path:
    """No process of the demo's session outlived it, and its working directory is gone (unless kept)."""
    assert run.leftovers is not None, "call finish() first"
    assert run.leftovers == [], f"the demo left processes running: {run.leftovers}\n{run.text}"
    match = WORKDIR_LINE.search(run.text)
    assert match is not None, run.text
    workdir = Path(match.group(1))
    assert workdir.exists() == workdir_kept, f"working directory {workdir}: kept={workdir.exists()}"
    return workdir


def sections(text: str) -> dict[int, str]:
    """The output of each step, by step number (the text between its heading and the next)."""
    marks = list(HEADING.finditer(text))
    return {
        int(mark.group(1)): text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, mark in enumerate(marks)
    }


def write_canary(tmp_path: Path) -> tuple[Path, str]:
    canary = f"canary-demo-{secrets.token_hex(12)}"
    path = tmp_path / "canary"
    path.write_text(canary + "\n", encoding="utf-8")
    return path, canary


def test_demo_runs_the_whole_flow_and_never_prints_the_value(tmp_path: Path) -> None:
    """Exit 0, every heading in order, every decision, the value reaches the child, the canary never shows."""
    secret_file, canary = write_canary(tmp_path)
    with demo("--secret-file", str(secret_file)) as run:
        code = run.finish()
    text = run.text
    assert code == 0, text
    assert canary not in text
    assert_left_nothing(run)

    headings = [(int(m.group(1)), int(m.group(2)), m.group(3)) for m in HEADING.finditer(text)]
    assert headings == [(i, len(STEPS), title) for i, title in enumerate(STEPS, start=1)]
    assert len(STEPS) == 7
    step = sections(text)

    # 1: the servers, on 127.0.0.1 only.
    assert re.search(r"OpenBao \(bao server -dev -dev-tls\): https://127\.0\.0\.1:\d+\n", step[1])
    assert re.search(r"TokenReview stand-in: https://127\.0\.0\.1:\d+/apis/authentication", step[1])
    assert re.search(r"gtc-admission serve .*: https://127\.0\.0\.1:\d+ ", step[1])

    # 2: bootstrap twice, the second run a no-op.
    first, _, second = step[2].partition("the same command again:")
    assert "created policy gtc-prod-acme-core" in first
    assert "created role gtc-prod-acme-core (auth/kubernetes)" in first
    assert "created transit key transit/keys/gtc-prod-acme" in first
    assert "created" not in second
    assert "nothing to change: Vault is already bootstrapped for env prod, tenant acme, team core" in second

    # 3: put, from stdin; the value shown only as its length and a hash prefix; KV holds the envelope.
    digest = hashlib.sha256(canary.encode()).hexdigest()
    assert f"given with --secret-file, {len(canary)} characters, sha256 {digest[:HASH_PREFIX]}..." in step[3]
    assert digest not in text  # only the prefix
    assert "$ gtc-secrets put secret://webhook/inbound-secret --env prod --tenant acme --team core" in step[3]
    assert "(envelope only)" in step[3]
    for envelope_field in ("alg:", "ciphertext:", "gtc_envelope:", "nonce:", "wrapped_key: vault:v1:"):
        assert envelope_field in step[3]

    # 4: the Deployment and its pod admitted (the pod with a patch), the dev-secret pod denied by rule id.
    assert step[4].count("-> allowed: true, decision: allowed, rules: none") == 2
    assert '{"op":"add","path":"/spec/serviceAccountName","value":"gtc-worker"}' in step[4]
    assert '"name":"VAULT_K8S_ROLE","value":"gtc-prod-acme-core"' in step[4]
    assert (
        '{"op":"add","path":"/metadata/annotations","value":{"greentic.ai/secrets-backend":"vault"}}'
        in step[4]
    )
    assert "-> allowed: false, decision: denied, rules: dev-secret-reference" in step[4]
    assert (
        "[dev-secret-reference] references forbidden Secret gtc-dev-secrets at "
        "spec.containers[0].envFrom[0].secretRef.name"
    ) in step[4]

    # 5: the env from the patch, the token of gtc-worker, and the child holding the value.
    for name in ("GREENTIC_SECRETS_BACKEND", "VAULT_ADDR", "VAULT_K8S_ROLE", "VAULT_K8S_TOKEN_PATH"):
        assert re.search(rf"^ +{name}=\S+ +\(from the patch\)$", step[5], re.MULTILINE), name
    assert "WEBHOOK_SECRET=secret://webhook/inbound-secret   (from the Deployment)" in step[5]
    assert "ServiceAccount token for system:serviceaccount:acme-prod:gtc-worker" in step[5]
    assert f"child: WEBHOOK_SECRET holds a value of {len(canary)} characters" in step[5]
    assert "| value matches: True" in step[5]

    # 6: OpenBao's audit lines for that worker (login, KV read, transit decrypt) and the webhook's.
    worker = (
        "[system:serviceaccount:acme-prod:gtc-worker role=gtc-prod-acme-core policies=gtc-prod-acme-core]"
    )
    for line in (
        "update auth/kubernetes/login",
        "read   secret/data/greentic/prod/acme/core/webhook/inbound-secret",
        "update transit/decrypt/gtc-prod-acme",
    ):
        assert re.search(rf"{re.escape(line)} +{re.escape(worker)}", step[6]), line
    assert "the value is in the audit log: False" in step[6]
    assert "(the same patch as gtc-admission review gave: True)" in step[6]
    assert '"endpoint": "mutate"' in step[6]
    assert '"decision": "allowed"' in step[6]
    assert '"user": "system:serviceaccount:kube-system:replicaset-controller"' in step[6]

    # 7: the default ServiceAccount is refused at login, and the child never runs.
    assert "ServiceAccount token for system:serviceaccount:acme-prod:default" in step[7]
    assert "403 permission denied" in step[7]
    assert "value matches" not in step[7]
    assert "-> exit code 1" in step[7]

    assert "stopping OpenBao" in text
    assert "stopping the TokenReview stand-in" in text
    assert "stopping gtc-admission serve" in text
    assert re.search(r"the whole flow took \d+\.\ds", text)


def test_a_failed_step_exits_non_zero_and_stops_everything(tmp_path: Path) -> None:
    """An empty value: put refuses it, the demo fails at step 3 with exit 1 and stops what it started;
    ``--keep`` leaves the working directory (with OpenBao's audit log) for a look afterwards."""
    secret_file = tmp_path / "empty"
    secret_file.write_text("", encoding="utf-8")
    with demo("--secret-file", str(secret_file), "--keep") as run:
        code = run.finish()
    text = run.text
    assert code == 1, text
    assert f"DEMO FAILED: step 3 ({STEPS[2]}): gtc-secrets exited with 1, expected 0" in text
    assert "=== Step 4/" not in text
    assert "stopping OpenBao" in text
    workdir = assert_left_nothing(run, workdir_kept=True)
    try:
        assert f"kept the working directory {workdir}" in text
        assert (workdir / "openbao" / "audit.log").is_file()
    finally:
        shutil.rmtree(workdir)


def test_sigterm_stops_everything(tmp_path: Path) -> None:
    """SIGTERM while OpenBao and the webhook are up: exit 130, nothing left running, no working directory."""
    secret_file, canary = write_canary(tmp_path)
    with demo("--secret-file", str(secret_file)) as run:
        run.wait_for("=== Step 2/", timeout=120)
        assert len(session_processes(run.process.pid)) >= 3  # the demo, OpenBao, gtc-admission serve
        run.process.send_signal(signal.SIGTERM)
        code = run.finish(timeout=60)
    assert code == 130, run.text
    assert "demo interrupted; everything it started is stopped" in run.text
    assert canary not in run.text
    assert_left_nothing(run)
