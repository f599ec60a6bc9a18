"""`gtc-admission audit` end to end: the CLI, the real ``kubernetes`` client and a kubeconfig file, against
the API stand-in (tests/support/kube_api.py) loaded with the legacy cluster (tests/support/legacy_cluster.py).

The stand-in fails every test that lists Secrets without the metadata-only Accept header, and every output
(stdout, stderr, log records) is checked for the Secrets' canary value.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gtc_admission import cli
from gtc_admission import constants as c
from gtc_admission.cluster_api import ACCEPT_METADATA_ONLY
from tests.support.kube_api import USER, KubeApiStandIn
from tests.support.legacy_cluster import (
    CANARY,
    DEV_SECRET,
    EXAMPLE_CONFIG,
    EXPECTED_FINDINGS,
    example_config,
    load_legacy_cluster,
)

pytestmark = pytest.mark.usefixtures("restore_root_logging")


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeApiStandIn]:
    """The legacy cluster behind a stand-in; KUBECONFIG points at it. Fails the test on a full Secret list."""
    api = KubeApiStandIn()
    load_legacy_cluster(api, example_config())
    with api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield api
    assert api.full_secret_requests == [], "a Secret was listed with its values"


def audit(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *args: str
) -> tuple[int, str, str]:
    """Run `gtc-admission audit --config <example> ARGS`; (exit code, stdout, stderr + log records)."""
    with caplog.at_level(logging.DEBUG):
        code = cli.main(["audit", "--config", str(EXAMPLE_CONFIG), *args])
    out, err = capsys.readouterr()
    logs = err + "\n".join(record.getMessage() for record in caplog.records)
    assert CANARY not in out and CANARY not in logs, "a Secret value reached the output"
    return code, out, logs


def findings_of(out: str) -> set[tuple[str, str, str, str]]:
    records = [json.loads(line) for line in out.splitlines()]
    return {(r["namespace"], r["kind"], r["name"], r["rule"]) for r in records}


def test_json_lists_exactly_the_expected_findings(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """-o json: one record per finding, exactly those of the legacy cluster; exit 1."""
    code, out, _ = audit(capsys, caplog, "-o", "json")
    assert code == 1
    assert findings_of(out) == EXPECTED_FINDINGS


def test_findings_name_owner_and_what_to_do(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """not-on-vault names the owning workload (through its ReplicaSet or Job) and the command to run."""
    _, out, _ = audit(capsys, caplog, "-o", "json")
    records = {(r["name"], r["rule"]): r for r in map(json.loads, out.splitlines())}
    telegram = records[("telegram-worker-5c6d7-8bq2m", c.AUDIT_RULE_NOT_ON_VAULT)]
    assert telegram["owner"] == {"kind": "Deployment", "name": "telegram-worker"}
    assert telegram["action"] == "kubectl -n acme-prod rollout restart deployment/telegram-worker"
    assert telegram["result"] == "fail" and telegram["severity"] == "high"
    nightly = records[("nightly-digest-29410-4xk8d", c.AUDIT_RULE_NOT_ON_VAULT)]
    assert nightly["owner"] == {"kind": "CronJob", "name": "nightly-digest"}
    # The legacy worker's new pods would be refused: restarting alone does not help, and the message says so.
    legacy = records[("legacy-worker-7d9f8b6c5-x2k4q", c.AUDIT_RULE_NOT_ON_VAULT)]
    assert "would be refused" in legacy["message"]
    assert legacy["action"].startswith("first fix what Deployment/legacy-worker is refused for")
    secret = records[(DEV_SECRET, c.RULE_DEV_SECRET_OBJECT)]
    assert "gtc-secrets put" in secret["action"] and f"delete secret {DEV_SECRET}" in secret["action"]


def test_owned_replica_sets_and_jobs_are_reported_through_their_owner(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The legacy Deployment's dev-secret-reference is reported once: not on its ReplicaSet nor its pod."""
    _, out, _ = audit(capsys, caplog, "-o", "json")
    rules = [(r["kind"], r["rule"]) for r in map(json.loads, out.splitlines())]
    assert rules.count(("Deployment", c.RULE_DEV_SECRET_REFERENCE)) == 1
    assert ("ReplicaSet", c.RULE_DEV_SECRET_REFERENCE) not in rules
    assert ("Pod", c.RULE_DEV_SECRET_REFERENCE) not in rules
    assert all(kind not in ("ReplicaSet", "Job") for kind, _ in rules)


def test_table_by_namespace(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The default table: a heading per audited namespace, a row per finding, and the summary."""
    code, out, _ = audit(capsys, caplog)
    assert code == 1
    headings = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert headings[0].startswith("acme-prod (env prod, tenant acme, team core; enforcement deny)")
    assert headings[1].startswith("beta-prod (env prod, tenant beta, team default; enforcement deny)")
    assert headings[2] == "audit: 2 namespaces, 13 objects checked, 9 findings (9 fail, 0 warn, 0 error)"
    assert "  fail    high      not-on-vault          Pod/telegram-worker-5c6d7-8bq2m" in out
    assert "acme-dev" not in out and "kube-system" not in out


def test_metadata_only_secret_lists_and_pagination(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Secrets are asked for as PartialObjectMetadataList by name; every list is paged with limit+continue;
    only bound namespaces of Vault environments are read; ended pods are not listed."""
    audit(capsys, caplog, "-o", "json", "--page-size", "1")
    secrets = cluster.lists_of("secrets")
    assert secrets and all(seen.accept == ACCEPT_METADATA_ONLY for seen in secrets)
    assert {seen.query["fieldSelector"] for seen in secrets} == {f"metadata.name={DEV_SECRET}"}
    pods = cluster.lists_of("pods")
    assert all(seen.query["limit"] == "1" for seen in cluster.requests if seen.method == "GET")
    assert any("continue" in seen.query for seen in pods), "no list was continued"
    assert {seen.query["fieldSelector"] for seen in pods} == {"status.phase!=Succeeded,status.phase!=Failed"}
    read = {
        seen.path.split("/namespaces/")[1].split("/")[0]
        for seen in cluster.requests
        if "/namespaces/" in seen.path
    }
    assert read == {"acme-prod", "beta-prod"}


def test_policyreport_output(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """-o policyreport: one wgpolicyk8s.io/v1alpha2 PolicyReport per audited namespace, as YAML."""
    code, out, _ = audit(capsys, caplog, "-o", "policyreport")
    assert code == 1
    reports = {doc["metadata"]["namespace"]: doc for doc in yaml.safe_load_all(out)}
    assert set(reports) == {"acme-prod", "beta-prod"}
    report = reports["acme-prod"]
    assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and report["kind"] == "PolicyReport"
    assert report["metadata"]["name"] == "gtc-admission"
    assert report["summary"] == {"pass": 3, "fail": 8, "warn": 0, "error": 0, "skip": 0}
    result = next(r for r in report["results"] if r["rule"] == c.RULE_DEV_SECRET_OBJECT)
    assert result["source"] == "gtc-admission" and result["policy"] == c.POLICY_REPORT_POLICY
    assert result["result"] == "fail" and result["severity"] == "high"
    assert result["resources"][0]["kind"] == "Secret" and result["resources"][0]["name"] == DEV_SECRET
    assert set(result["timestamp"]) == {"seconds", "nanos"}
    assert all(isinstance(value, str) for r in report["results"] for value in r["properties"].values())


def test_apply_creates_then_replaces_stale_results(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """--apply creates one report per namespace; a second run after a fix replaces it (the fixed finding is
    gone, the summary counts it as passed)."""
    code, _, logs = audit(capsys, caplog, "-o", "policyreport", "--apply")
    assert code == 1
    assert set(cluster.reports) == {("acme-prod", "gtc-admission"), ("beta-prod", "gtc-admission")}
    assert "PolicyReport beta-prod/gtc-admission created" in logs
    # The operator moved beta-prod's values into Vault and deleted the Secret.
    cluster.objects[("v1", "secrets")]["beta-prod"].clear()
    code, _, logs = audit(capsys, caplog, "-o", "json", "--apply")
    assert "PolicyReport beta-prod/gtc-admission replaced" in logs
    beta = cluster.reports[("beta-prod", "gtc-admission")]
    assert beta["results"] == []
    assert beta["summary"] == {"pass": 2, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    assert len(cluster.reports[("acme-prod", "gtc-admission")]["results"]) == 8


def test_apply_deletes_the_reports_of_namespaces_no_longer_audited(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A report an audit wrote in a namespace that is no longer audited goes; anyone else's stays; with
    --namespace nothing else is touched."""
    ours = {"app.kubernetes.io/managed-by": "gtc-admission-audit"}
    cluster.reports[("old-team", "gtc-admission")] = {
        "metadata": {"name": "gtc-admission", "namespace": "old-team", "labels": ours}
    }
    cluster.reports[("old-team", "kyverno")] = {
        "metadata": {"name": "kyverno", "namespace": "old-team", "labels": {}}
    }
    audit(capsys, caplog, "-o", "json", "--apply", "--namespace", "beta-prod")
    assert ("old-team", "gtc-admission") in cluster.reports
    _, _, logs = audit(capsys, caplog, "-o", "json", "--apply", "--page-size", "1")
    assert "PolicyReport old-team/gtc-admission deleted: the namespace is no longer audited" in logs
    assert set(cluster.reports) == {
        ("old-team", "kyverno"),
        ("acme-prod", "gtc-admission"),
        ("beta-prod", "gtc-admission"),
    }


def test_clean_cluster_exits_0(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bound namespace with nothing to report: exit 0, and the table says so."""
    with KubeApiStandIn() as api:
        api.add_namespace("acme-prod")
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        code, out, _ = audit(capsys, caplog)
    assert code == 0
    assert (
        "acme-prod (env prod, tenant acme, team core; enforcement deny): 0 objects checked, no findings"
        in out
    )


def test_namespace_limits_the_audit(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """--namespace reads only that namespace; an unbound one is nothing to audit; an absent one exits 2."""
    code, out, _ = audit(capsys, caplog, "-o", "json", "--namespace", "beta-prod")
    assert code == 1
    assert findings_of(out) == {f for f in EXPECTED_FINDINGS if f[0] == "beta-prod"}
    assert all("acme-prod" not in seen.path for seen in cluster.requests)
    assert audit(capsys, caplog, "--namespace", "kube-system")[0] == 0
    code, _, logs = audit(capsys, caplog, "--namespace", "nowhere")
    assert code == 2
    assert "namespace nowhere not found in the cluster" in logs


def _forbid(verb: str, plural: str, namespace: str | None) -> Callable[[KubeApiStandIn, Path], None]:
    return lambda api, _: api.forbidden.add((verb, plural, namespace))


def _wrong_token(api: KubeApiStandIn, tmp_path: Path) -> None:
    # The fixture's monkeypatch restores KUBECONFIG after the test.
    os.environ["KUBECONFIG"] = str(api.write_kubeconfig(tmp_path / "bad", token="wrong"))


def _expire(api: KubeApiStandIn, _: Path) -> None:
    api.expire_continue = True


@dataclass(frozen=True)
class Refusal:
    case: str
    setup: Callable[[KubeApiStandIn, Path], None]
    args: tuple[str, ...]
    expected: str


REFUSALS = [
    Refusal(
        "403 on a list",
        _forbid("list", "pods", "acme-prod"),
        ("-o", "json"),
        "access refused: list pods in namespace acme-prod is forbidden (403)",
    ),
    Refusal(
        "403 on the PolicyReport write",
        _forbid("create", "policyreports", None),
        ("-o", "json", "--apply"),
        "access refused: create policyreports in namespace acme-prod is forbidden (403)",
    ),
    Refusal(
        "401: a token the API server does not accept",
        _wrong_token,
        (),
        "did not accept the credentials (401) to list namespaces",
    ),
    Refusal(
        "410: a continue token expired mid-way (never a silently partial report)",
        _expire,
        ("--page-size", "1"),
        "expired (410)",
    ),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.case for r in REFUSALS])
def test_refusals_exit_3_naming_verb_and_resource(
    cluster: KubeApiStandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    refusal: Refusal,
) -> None:
    """Exit 3; the message names the verb, resource and namespace, never the API server's Status text (it
    names the user)."""
    refusal.setup(cluster, tmp_path)
    code, _, logs = audit(capsys, caplog, *refusal.args)
    assert code == 3, refusal.case
    assert refusal.expected in logs
    assert USER not in logs


def test_unreachable_cluster_exits_3(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens at the kubeconfig's server: exit 3, naming the host."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = KubeApiStandIn()
    api.port = port
    monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig")))
    code, _, logs = audit(capsys, caplog)
    assert code == 3
    assert f"cluster unreachable at http://127.0.0.1:{port}: list namespaces" in logs


def test_context_and_kubeconfig_errors(
    cluster: KubeApiStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--context picks a context of the kubeconfig; an unknown context or a missing file exits 2."""
    config = json.loads(cluster.write_kubeconfig(tmp_path / "kc").read_text())
    # The current context points at a dead server; the named one at the stand-in.
    config["clusters"].append({"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "dead", "context": {"cluster": "dead", "user": "tester"}})
    config["current-context"] = "dead"
    (tmp_path / "two").write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "two"))
    assert audit(capsys, caplog, "-o", "json", "--context", "stand-in")[0] == 1
    code, _, logs = audit(capsys, caplog, "--context", "nope")
    assert code == 2 and "cannot load credentials" in logs
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    code, _, logs = audit(capsys, caplog)
    assert code == 2 and "cannot load credentials from kubeconfig" in logs


@pytest.mark.parametrize(
    "argv",
    [
        ["audit"],
        ["audit", "--config", "x.yaml", "-o", "csv"],
        ["audit", "--config", "x.yaml", "--page-size", "0"],
        ["audit", "--config", "x.yaml", "--page-size", "many"],
    ],
)
def test_audit_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing or invalid audit arguments: exit 2 with a usage message."""
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_audit_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config the webhook would refuse: exit 2 before any request."""
    bad = tmp_path / "config.yaml"
    bad.write_text("forbidenSecrets: [x]\n")
    assert cli.main(["audit", "--config", str(bad)]) == 2
    assert "config error" in capsys.readouterr().err


ROOT = EXAMPLE_CONFIG.parents[2]


def _block(text: str, after: str, fence: str) -> str:
    """The first ```fence block that follows the ```sh block holding only the line ``after``."""
    rest = text.split(after + "\n```\n\n```" + fence + "\n", 1)[1]
    return rest.split("\n```\n", 1)[0] + "\n"


def _readme_block(after: str, fence: str) -> str:
    """That block in the README's audit section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return _block(text.split("## Auditing what already runs (audit)", 1)[1], after, fence)


def _reference_block(after: str, fence: str) -> str:
    """That block in docs/audit.md's real output."""
    text = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    return _block(text.split("## Examples (real output)", 1)[1], after, fence)


def _without_run_values(document: Any) -> Any:
    """uids and timestamps differ on every run."""
    if isinstance(document, dict):
        return {k: _without_run_values(v) for k, v in document.items() if k not in ("uid", "timestamp")}
    if isinstance(document, list):
        return [_without_run_values(item) for item in document]
    return document


def test_readme_shows_real_output(
    cluster: KubeApiStandIn, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The README's audit output and docs/audit.md's are what the command prints for the legacy cluster
    (uids, times aside)."""
    command = "gtc-admission audit --config deploy/webhook/config.yaml"
    _, out, _ = audit(capsys, caplog, "--namespace", "beta-prod")
    assert out == _readme_block(command + " --namespace beta-prod", "text")
    assert audit(capsys, caplog)[1] == _reference_block(command, "text")
    _, out, _ = audit(capsys, caplog, "-o", "json", "--namespace", "beta-prod")
    shown = _reference_block(command + " -o json --namespace beta-prod", "json")
    assert _without_run_values(json.loads(out)) == _without_run_values(json.loads(shown))
    _, out, _ = audit(capsys, caplog, "-o", "policyreport", "--namespace", "beta-prod")
    shown = _reference_block(command + " -o policyreport --namespace beta-prod", "yaml")
    assert _without_run_values(yaml.safe_load(out)) == _without_run_values(yaml.safe_load(shown))
