"""Benchmark of ``gtc-admission audit`` (issue 11): 10,000 pods audited, time and peak memory. Not a test.

The API stand-in of the tests (tests/support/kube_api.py) serves one bound namespace with one Deployment and
N running worker pods (every tenth predates the webhook, the others are patched: tests/support/
legacy_cluster.py); ``gtc-admission audit -o json`` runs as a child process against it, through a
kubeconfig, as an operator would run it. Per run: wall time and the child's own peak RSS (VmHWM, polled).

Runs, interleaved over ``rounds``: the baseline of 1,000 pods and 10,000 pods, both in pages of 500 (the
default), and 10,000 pods in one page (``--page-size 10000``) to show what paging saves. Ratios come from
figures of the same run: time 10k / 1k (linear is 10), peak RSS 10k / 1k (bounded memory is about 1).
Its figures go into their own section of bench/RESULTS.md, between their own markers.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tests.support.kube_api import KubeApiStandIn
from tests.support.legacy_cluster import EXAMPLE_CONFIG, example_config, worker_pods

from gtc_admission import constants as c
from gtc_admission.config import NamespaceBinding

NAMESPACE: Final = "fleet"
BINDING: Final = NamespaceBinding("prod", "acme")  # by the namespace's labels
BASELINE_PODS: Final = 1_000
PODS: Final = 10_000
PAGE: Final = 500
UNPATCHED_EVERY: Final = 10
RUNS: Final = (("1k pods, pages of 500", BASELINE_PODS, PAGE), ("10k pods, pages of 500", PODS, PAGE))
ONE_PAGE: Final = ("10k pods, one page", PODS, PODS)
POLL_SECONDS: Final = 0.005
GTC_ADMISSION: Final = Path(sys.executable).with_name("gtc-admission")
BEGIN: Final = "<!-- bench/audit.py: figures of the last run, begin -->"
END: Final = "<!-- bench/audit.py: figures of the last run, end -->"


def _peak_rss_kib(pid: int) -> int | None:
    """VmHWM of a running process: its own peak RSS since its exec (None once it has exited).

    Not the rusage of wait4: on Linux a child's ru_maxrss also counts the parent's memory it was forked
    from (the stand-in's pods, here), recorded at exec.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _audit_once(kubeconfig: Path, page_size: int, workdir: Path) -> dict[str, float]:
    """One `gtc-admission audit` child: seconds, peak RSS in MiB, findings printed."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    out_path = workdir / "audit.jsonl"
    command = [str(GTC_ADMISSION), "--log-level", "WARNING", "audit", "--config", str(EXAMPLE_CONFIG)]
    command += ["-o", "json", "--namespace", NAMESPACE, "--page-size", str(page_size)]
    peak = 0
    with out_path.open("wb") as out, (workdir / "audit.err").open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(  # noqa: S603 (our own command line, no shell)
            command, stdout=out, stderr=err, env=env
        )
        # Poll until it exits; VmHWM only grows, so the last reading is the peak (within one poll).
        while child.poll() is None:
            peak = max(peak, _peak_rss_kib(child.pid) or 0)
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
    if child.returncode != 1:  # there are findings: every tenth pod predates the webhook
        stderr = (workdir / "audit.err").read_text(errors="replace")
        raise RuntimeError(f"audit exited {child.returncode}: {stderr[-500:]}")
    findings = sum(1 for _ in out_path.open("rb"))
    return {"seconds": seconds, "peak_rss_mib": peak / 1024, "findings": findings}


def bench_audit(rounds: int, workdir: Path, note: Callable[[str], None]) -> dict[str, Any]:
    config = example_config()
    stand_ins: dict[int, KubeApiStandIn] = {}
    kubeconfigs: dict[int, Path] = {}
    for count in sorted({BASELINE_PODS, PODS}):
        api = KubeApiStandIn()
        api.add_namespace(NAMESPACE, {c.LABEL_ENV: BINDING.env, c.LABEL_TENANT: BINDING.tenant})
        worker_pods(api, NAMESPACE, count, config, binding=BINDING, unpatched_every=UNPATCHED_EVERY)
        stand_ins[count] = api.start()
        kubeconfigs[count] = api.write_kubeconfig(workdir / f"kubeconfig-{count}")
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in (*RUNS, ONE_PAGE)}
    try:
        for round_index in range(rounds):
            order = [*RUNS, ONE_PAGE]
            if round_index % 2:
                order.reverse()
            for label, count, page in order:
                sample = _audit_once(kubeconfigs[count], page, workdir)
                expected = -(-count // UNPATCHED_EVERY)
                if sample["findings"] != expected:
                    raise RuntimeError(f"{label}: {sample['findings']} findings, expected {expected}")
                samples[label].append(sample)
                note(f"audit {label}: {sample['seconds']:.2f} s, peak RSS {sample['peak_rss_mib']:.1f} MiB")
    finally:
        for api in stand_ins.values():
            api.stop()
    figures = {
        label: {
            "pods": count,
            "page_size": page,
            "seconds": statistics.median(s["seconds"] for s in samples[label]),
            "peak_rss_mib": statistics.median(s["peak_rss_mib"] for s in samples[label]),
            "findings": samples[label][0]["findings"],
        }
        for label, count, page in (*RUNS, ONE_PAGE)
    }
    base, big, one_page = (figures[label] for label, _, _ in (*RUNS, ONE_PAGE))
    return {
        "rounds": rounds,
        "runs": figures,
        "time_ratio": big["seconds"] / base["seconds"],
        "rss_ratio": big["peak_rss_mib"] / base["peak_rss_mib"],
        "one_page_rss_ratio": one_page["peak_rss_mib"] / big["peak_rss_mib"],
        "pods_per_second": big["pods"] / big["seconds"],
        # The fixed cost (interpreter, imports, the first requests) cancels out: what one more pod costs.
        "marginal_ms_per_pod": 1000 * (big["seconds"] - base["seconds"]) / (big["pods"] - base["pods"]),
    }


def render(result: dict[str, Any], date: str) -> str:
    lines = [
        f"Measured {date}, {result['rounds']} interleaved round(s), medians. "
        f"`gtc-admission audit -o json --namespace {NAMESPACE}` as a child process against the API stand-in "
        "(same machine, loopback HTTP); one Deployment, every tenth pod predating the webhook "
        "(`not-on-vault`), the others patched.",
        "",
        "| Run | pods | page size | wall s | ms per pod | peak RSS MiB | findings |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in result["runs"].items():
        lines.append(
            f"| {label} | {run['pods']} | {run['page_size']} | {run['seconds']:.2f} "
            f"| {1000 * run['seconds'] / run['pods']:.3f} | {run['peak_rss_mib']:.1f} | {run['findings']} |"
        )
    lines += [
        "",
        f"- 10k pods: {result['pods_per_second']:.0f} pods/s; time 10k / 1k = {result['time_ratio']:.2f} "
        "(linear would be 10: the start-up, about the 1k run's time, is paid once); "
        f"each pod beyond the first 1k costs {result['marginal_ms_per_pod']:.3f} ms.",
        f"- Peak RSS 10k / 1k (pages of 500) = {result['rss_ratio']:.2f}: memory is bounded by the page, not "
        "the number of pods (1.00 would be flat).",
        f"- One page of 10k / pages of 500 = {result['one_page_rss_ratio']:.2f}: what paging saves.",
        "",
    ]
    return "\n".join(lines)


def write_section(markdown: str, path: Path) -> None:
    """Replace the figures between this benchmark's own markers (added at the end the first time)."""
    replace_section(path, "## `gtc-admission audit` (issue 11)", BEGIN, END, markdown)


def replace_section(path: Path, title: str, begin: str, end: str, markdown: str) -> None:
    """Put ``markdown`` between the markers ``begin`` and ``end`` of ``path``, keeping the rest; the first
    time, a section ``title`` with the markers is added at the end. (bench/watch.py uses it too.)"""
    text = path.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        text = f"{text.rstrip()}\n\n{title}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{markdown}{end}{tail}", encoding="utf-8")
