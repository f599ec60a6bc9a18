"""deploy/audit, rendered with `kubectl kustomize` the way an operator uses it: the component added to the
self-managed-CA overlay. Checks the auditors' RBAC against what the code lists, and the CronJob's command
against the CLI's own parser. (The restricted-pod checks of test_manifests.py cover its container too.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gtc_admission.cli import build_parser
from gtc_admission.cluster_api import LISTED_KINDS
from gtc_admission.tls import generate_certificates, write_certificates
from tests.unit.test_manifests import DEPLOY, KUBECTL, SERVICE_DNS, Doc, find, kustomize, one

AUDIT_SA = "gtc-audit"
AUDIT_NAMESPACE = "gtc-system"
READER = "gtc-audit-reader"
WRITER = "gtc-audit-policyreport-writer"


@pytest.fixture(scope="module")
def with_audit(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The self-managed-CA overlay plus the audit component, as an operator would write it."""
    if KUBECTL is None:
        pytest.skip("kubectl not installed: cannot render the kustomizations (kubectl kustomize)")
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root)
    write_certificates(
        generate_certificates([SERVICE_DNS, f"{SERVICE_DNS}.cluster.local"]),
        root / "overlays" / "self-managed-ca" / "tls",
    )
    overlay = root / "overlays" / "with-audit"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources:\n  - ../self-managed-ca\ncomponents:\n  - ../../audit\n", encoding="utf-8"
    )
    return kustomize(overlay)


def _rules_of(docs: list[Doc], role: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in one(docs, "ClusterRole", role)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_auditor_role_lists_exactly_what_the_audit_lists(with_audit: list[Doc]) -> None:
    """The auditors' ClusterRole: `list` on exactly the kinds cluster_api lists; no get, watch or write."""
    expected = {(kind.api_version.rpartition("/")[0], kind.plural, "list") for kind in LISTED_KINDS}
    assert _rules_of(with_audit, READER) == expected


def test_audit_service_account_writes_policy_reports_only(with_audit: list[Doc]) -> None:
    """gtc-audit is bound to the reader and to a PolicyReport writer, nothing else."""
    bound = {
        binding["roleRef"]["name"]
        for binding in find(with_audit, "ClusterRoleBinding") + find(with_audit, "RoleBinding")
        for subject in binding.get("subjects", [])
        if subject["kind"] == "ServiceAccount" and subject["name"] == AUDIT_SA
    }
    assert bound == {READER, WRITER}
    assert _rules_of(with_audit, WRITER) == {
        ("wgpolicyk8s.io", "policyreports", verb) for verb in ("get", "list", "create", "update", "delete")
    }
    # The webhook's own RBAC is unchanged: it still reads namespaces only.
    assert {r for r in _rules_of(with_audit, "gtc-admission-namespace-reader")} == {
        ("", "namespaces", verb) for verb in ("get", "list", "watch")
    }


def test_cronjob_runs_the_audit_hourly_with_the_webhook_config(with_audit: list[Doc]) -> None:
    """Hourly, one at a time, as gtc-audit in gtc-system: `audit -o policyreport --apply` on the webhook's own
    (hashed) ConfigMap and image."""
    cronjob = one(with_audit, "CronJob", AUDIT_SA)
    assert cronjob["metadata"]["namespace"] == AUDIT_NAMESPACE
    minute, hour, *rest = cronjob["spec"]["schedule"].split()
    assert minute.isdigit() and hour == "*" and rest == ["*", "*", "*"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == AUDIT_SA and pod["automountServiceAccountToken"] is True
    [container] = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.output, args.apply, args.namespace) == ("audit", "policyreport", True, None)
    [mount] = container["volumeMounts"]
    assert str(args.config) == f"{mount['mountPath']}/config.yaml"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one(with_audit, "ConfigMap")["metadata"]["name"]
    assert config_map.startswith("gtc-admission-config-")
    assert volume["configMap"]["name"] == config_map
    webhook = one(with_audit, "Deployment", "gtc-admission")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == webhook["image"]


def test_a_failed_run_is_not_retried(with_audit: list[Doc]) -> None:
    """A run that exits non-zero (findings, or no access) is not retried within the hour, nor overlapped."""
    job = one(with_audit, "CronJob", AUDIT_SA)["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_component_path_is_documented() -> None:
    """deploy/README.md lists the component (the table every directory is in)."""
    assert "`audit/`" in (Path(DEPLOY) / "README.md").read_text(encoding="utf-8")
