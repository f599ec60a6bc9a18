"""Benchmark of issue 11: ``gtc-admission review`` of whole rendered manifests, documents per second.

    .venv/bin/python -m bench.run --only stream

A mixed stream as ``kubectl kustomize`` prints it (worker Pods, worker Deployments, Services, ConfigMaps,
Secrets; in every 50, one Deployment reads ``gtc-dev-secrets`` and one Secret is ``gtc-dev-secrets``, both
denied), all in ``acme-prod`` (env ``prod``, Vault) of the example config. Measured in this process, on
one core:

- floor: libyaml parsing the same text (``yaml.load_all`` with ``CSafeLoader``), which any reviewer of
  YAML has to do; and the pure Python loader, to show what libyaml saves;
- ours: ``stream.split_text`` + ``review_manifests`` + the text report (finding lines and the summary),
  and the same with ``-o json`` records (``AuditWriter``), both into memory;
- the command: ``gtc-admission review FILE`` as CI runs it, a fresh process (start-up included).

Best and median of interleaved runs; ours as a ratio of the floor from the same run. The figures go into
their own section of bench/RESULTS.md (between this module's markers), leaving the others alone.
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

from bench import pods
from gtc_admission import stream
from gtc_admission.audit import AuditWriter
from gtc_admission.bindings import StaticBindings
from gtc_admission.config import Config, load_config

DOCUMENTS: Final = 5_000
ROUNDS: Final = 5
TARGET_DOCS_PER_SECOND: Final = 2_000.0
NAMESPACE: Final = "acme-prod"
GTC_ADMISSION: Final = Path(sys.executable).with_name("gtc-admission")
WORKER_DEPLOYMENT: Final = pods.ROOT / "deploy" / "examples" / "acme-prod" / "worker.yaml"
BEGIN_MARKER: Final = "<!-- bench/stream.py: figures of the last run, begin -->"
END_MARKER: Final = "<!-- bench/stream.py: figures of the last run, end -->"
KINDS: Final = ("Pod", "Deployment", "Service", "ConfigMap", "Secret")
DENIED_EVERY: Final = 50  # in every 50 documents, one denied Deployment and one denied Secret
DEV_SECRET: Final = "gtc-dev-secrets"  # noqa: S105 (a name in the example config's forbiddenSecrets)


def _named(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {**body, "metadata": {**body.get("metadata", {}), "name": name, "namespace": NAMESPACE}}


def mixed_stream(documents: int = DOCUMENTS) -> str:
    """``documents`` YAML documents, the five kinds in turn; in every 50, one Deployment reads
    ``gtc-dev-secrets`` and one Secret is ``gtc-dev-secrets`` itself (both denied)."""
    deployment, service = yaml.safe_load_all(WORKER_DEPLOYMENT.read_text(encoding="utf-8"))
    worker_pod = pods.review(pods.SMALL)["request"]["object"]
    denied = pods.review(pods.DENIED)["request"]["object"]
    denied_deployment = {**deployment, "spec": {**deployment["spec"], "template": {"spec": denied["spec"]}}}
    denied_deployment["spec"]["template"]["metadata"] = deployment["spec"]["template"]["metadata"]
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"LOG_LEVEL": "info", "REGION": "eu"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": {"TOKEN": "not-a-value"}}
    objects = []
    for index in range(documents):
        if index % DENIED_EVERY == DENIED_EVERY - 1:
            objects.append(_named(denied_deployment, f"old-worker-{index}"))
            continue
        if index % DENIED_EVERY == DENIED_EVERY // 2 - 1:
            objects.append(_named(secret, DEV_SECRET))
            continue
        shape = (worker_pod, deployment, service, config_map, secret)[index % len(KINDS)]
        objects.append(_named(shape, f"{KINDS[index % len(KINDS)].lower()}-{index}"))
    return yaml.safe_dump_all(objects, sort_keys=False)


def _review(text: str, config: Config, *, json_records: bool) -> stream.Tally:
    """What ``gtc-admission review -`` does with the text, the output written into memory."""
    out = io.StringIO()
    writer = AuditWriter(out) if json_records else None
    tally = stream.Tally()
    outcomes = stream.review_manifests(
        stream.split_text(text, stream.STDIN_SOURCE),
        config=config,
        bindings=StaticBindings(config.namespaces),
        namespace=None,
    )
    for outcome in outcomes:
        tally.add(outcome)
        if isinstance(outcome, stream.Reviewed):
            if writer is not None:
                writer.write(outcome.record)
            else:
                out.writelines(f"{line}\n" for line in stream.finding_lines(outcome.record))
    out.write(tally.line() + "\n")
    return tally


def _timed(function: Callable[[], object]) -> float:
    start = time.process_time()
    function()
    return time.process_time() - start


def _command(path: Path, config_file: Path) -> dict[str, float]:
    """``gtc-admission review FILE`` in a fresh process: wall and CPU seconds, start-up included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(  # noqa: S603 (our own command line, no shell)
        [str(GTC_ADMISSION), "review", "--config", str(config_file), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 1:  # the denied Deployments
        raise RuntimeError(f"gtc-admission review exited {done.returncode}: {done.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def bench(workdir: Path, documents: int = DOCUMENTS, rounds: int = ROUNDS) -> dict[str, Any]:
    """Documents per second of CPU, per way, best and median of ``rounds`` interleaved runs."""
    config = load_config(pods.EXAMPLE_CONFIG)
    text = mixed_stream(documents)
    check = _review(text, config, json_records=False)
    expected_denied = 2 * (documents // DENIED_EVERY)
    if (
        check.denied != expected_denied
        or check.bad
        or check.failed
        or check.judged + check.not_judged != documents
    ):
        raise RuntimeError(f"unexpected review of the bench stream: {check.line()}")
    ways: dict[str, Callable[[], object]] = {
        "floor": lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader)),
        "python_loader": lambda: list(yaml.load_all(text, Loader=yaml.SafeLoader)),
        "ours_text": lambda: _review(text, config, json_records=False),
        "ours_json": lambda: _review(text, config, json_records=True),
    }
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    ratios: list[float] = []
    for _ in range(rounds):
        for way, function in ways.items():
            seconds[way].append(_timed(function))
        ratios.append(seconds["floor"][-1] / seconds["ours_text"][-1])
    path = workdir / "stream.yaml"
    path.write_text(text, encoding="utf-8")
    command = _command(path, pods.EXAMPLE_CONFIG)
    result: dict[str, Any] = {
        "documents": documents,
        "bytes": len(text.encode()),
        "summary": check.line(),
        "rounds": rounds,
        "libyaml": bool(yaml.__with_libyaml__),
        "cores": os.cpu_count(),
        "ratio_to_floor": statistics.median(ratios),
        "command": {**command, "docs_per_second_wall": documents / command["wall_s"]},
    }
    for way, runs in seconds.items():
        result[way] = {
            "best_docs_per_second": documents / min(runs),
            "median_docs_per_second": documents / statistics.median(runs),
        }
    return result


def render(result: dict[str, Any], measured: str) -> str:
    ours = result["ours_text"]
    met = "met" if ours["median_docs_per_second"] >= TARGET_DOCS_PER_SECOND else "**missed**"
    command = result["command"]

    def row(label: str, way: str) -> str:
        figures = result[way]
        return (
            f"| {label} | {figures['best_docs_per_second']:,.0f} | {figures['median_docs_per_second']:,.0f} |"
        )

    return "\n".join(
        [
            f"### `gtc-admission review` of rendered manifests (issue 11; {measured})",
            "",
            f"A mixed stream of {result['documents']:,} documents ({result['bytes'] / 1e6:.1f} MB of YAML): "
            "worker Pods, worker Deployments, Services, ConfigMaps and Secrets in turn; in every 50 one "
            "Deployment reading `gtc-dev-secrets` and Secret `gtc-dev-secrets` itself, both denied; all in "
            f"`acme-prod` of the example config. Summary: `{result['summary']}`. CPU time of "
            f"one process (one core), best and median of {result['rounds']} interleaved runs.",
            "",
            "| Way | docs/s, best | docs/s, median |",
            "|---|---|---|",
            row("floor: libyaml parsing only (`yaml.load_all`, `CSafeLoader`)", "floor"),
            row("pure Python loader parsing only (`SafeLoader`), for comparison", "python_loader"),
            row("ours: split, judge, text report (in memory)", "ours_text"),
            row("ours with `-o json` records (in memory)", "ours_json"),
            "",
            f"Ours / floor (median of per-round ratios): {result['ratio_to_floor']:.2f}. "
            f"Target >= {TARGET_DOCS_PER_SECOND:,.0f} docs/s on one core: {met} "
            f"({ours['median_docs_per_second']:,.0f}). "
            f"The command `gtc-admission review FILE` in a fresh process, start-up included: "
            f"{command['wall_s']:.2f} s wall, {command['cpu_s']:.2f} s CPU, "
            f"{command['docs_per_second_wall']:,.0f} docs/s.",
        ]
    )


def write_results(markdown: str, path: Path) -> None:
    """Replace this section of RESULTS.md (between this module's markers), or append it."""
    block = f"{BEGIN_MARKER}\n{markdown}\n{END_MARKER}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, rest = text.split(BEGIN_MARKER, 1)
        text = head + block + rest.split(END_MARKER, 1)[1]
    else:
        text = f"{text.rstrip()}\n\n## Rendered manifests (`gtc-admission review` of a stream)\n\n{block}\n"
    path.write_text(text, encoding="utf-8")
