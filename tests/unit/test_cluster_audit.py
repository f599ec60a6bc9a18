"""The audit's judging and reports, pure: an in-memory ClusterReader, no HTTP (the CLI tests do HTTP)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from gtc_admission import cluster_report
from gtc_admission import constants as c
from gtc_admission.cluster_api import (
    LISTED_KINDS,
    POD,
    POLICY_REPORT,
    SECRET,
    ClusterSettings,
    Kind,
    KubernetesCluster,
    cluster_settings_from_env,
)
from gtc_admission.cluster_audit import (
    AuditFinding,
    NamespaceAudit,
    NamespaceNotFound,
    ObjectRef,
    audit_cluster,
    bound_namespaces,
    restart_action,
    result_for,
)
from gtc_admission.config import NamespaceBinding
from gtc_admission.namespace_cache import ClusterCredentials
from tests.support.kube_api import KINDS
from tests.support.legacy_cluster import (
    CANARY,
    DEV_SECRET,
    WORKER,
    example_config,
    patched,
    pod_spec,
    running_pod,
    secret,
)

CONFIG = example_config()
PROD = NamespaceBinding("prod", "acme", "core")


class MemoryReader:
    """A ClusterReader over dicts; Secrets are handed out as metadata only, like the real reader."""

    def __init__(
        self,
        namespaces: list[str],
        objects: dict[str, list[dict[str, Any]]] | None = None,
        labels: dict[str, dict[str, str]] | None = None,
    ) -> None:
        labels = labels or {}
        self._namespaces = [
            {"metadata": {"name": name, "labels": labels.get(name, {})}} for name in namespaces
        ]
        self._objects = objects or {}
        self.selectors: list[tuple[str, str | None]] = []

    def namespaces(self) -> Iterator[Mapping[str, Any]]:
        yield from self._namespaces

    def objects(
        self, kind: Kind, namespace: str, *, field_selector: str | None = None
    ) -> Iterator[Mapping[str, Any]]:
        assert kind != SECRET
        self.selectors.append((kind.plural, field_selector))
        for obj in self._objects.get(kind.plural, []):
            if obj["metadata"]["namespace"] == namespace:
                yield obj

    def secret_metadata(self, namespace: str, name: str) -> Iterator[Mapping[str, Any]]:
        for obj in self._objects.get("secrets", []):
            meta = obj["metadata"]
            if meta["namespace"] == namespace and meta["name"] == name:
                yield {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}


def test_listed_kinds_are_served_by_the_stand_in() -> None:
    """Every kind the audit lists is one the stand-in serves (same apiVersion and plural)."""
    assert {(kind.api_version, kind.plural) for kind in LISTED_KINDS} == set(KINDS) - {
        (POLICY_REPORT.api_version, POLICY_REPORT.plural)
    }


@pytest.mark.parametrize(
    ("rule", "enforcement", "expected"),
    [
        (c.RULE_DEV_SECRET_REFERENCE, "deny", "fail"),
        (c.RULE_DEV_SECRET_REFERENCE, None, "fail"),
        (c.RULE_DEV_SECRET_REFERENCE, "warn", "warn"),
        (c.AUDIT_RULE_NOT_ON_VAULT, "dryrun", "warn"),
        (c.RULE_VAULT_SETTINGS_OVERRIDE, "deny", "warn"),
        (c.RULE_INTERNAL_ERROR, "deny", "error"),
    ],
)
def test_result_for(rule: str, enforcement: str | None, expected: str) -> None:
    """fail where the webhook refuses, warn where it only warns, error when the object could not be judged."""
    assert result_for(rule, enforcement) == expected


def test_the_dev_secret_is_judged_by_the_webhooks_rule() -> None:
    """A forbidden name in a Vault namespace is dev-secret-object, with the webhook's own message and the
    command that removes it; another Secret is never even asked for; no key or value in any text."""
    secrets = [secret(DEV_SECRET, "acme-prod"), secret("webhook-tls", "acme-prod")]
    [audit] = audit_cluster(MemoryReader(["acme-prod"], {"secrets": secrets}), CONFIG)
    [found] = audit.findings
    assert (found.rule, found.result, found.severity) == (c.RULE_DEV_SECRET_OBJECT, "fail", "high")
    assert found.message.startswith(f"Secret {DEV_SECRET} is not allowed in namespace acme-prod")
    assert found.action.endswith(f"kubectl -n acme-prod delete secret {DEV_SECRET}")
    assert "TELEGRAM_TOKEN" not in found.message + found.action
    assert audit.checked == 1


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        (None, "re-create the pod: kubectl -n ns delete pod p, then apply it again"),
        (ObjectRef("apps/v1", "Deployment", "d", "ns"), "kubectl -n ns rollout restart deployment/d"),
        (ObjectRef("apps/v1", "StatefulSet", "s", "ns"), "kubectl -n ns rollout restart statefulset/s"),
        (ObjectRef("apps/v1", "DaemonSet", "d", "ns"), "kubectl -n ns rollout restart daemonset/d"),
        (
            ObjectRef("apps/v1", "ReplicaSet", "r", "ns"),
            "kubectl -n ns delete pod p (replicaset/r creates a patched one)",
        ),
        (ObjectRef("batch/v1", "Job", "j", "ns"), "kubectl -n ns delete pod p (job/j creates a patched one)"),
        (
            ObjectRef("batch/v1", "CronJob", "c", "ns"),
            "the next run of cronjob/c is patched; to replace this one: kubectl -n ns delete pod p",
        ),
        (
            ObjectRef("argoproj.io/v1alpha1", "Rollout", "r", "ns"),
            "restart it through its owner Rollout/r: the webhook patches the new pods",
        ),
    ],
)
def test_restart_action(owner: ObjectRef | None, expected: str) -> None:
    """What to run to get a patched pod depends on who owns the pod."""
    assert restart_action(owner, ObjectRef("v1", "Pod", "p", "ns")) == expected


def test_bindings_static_first_then_labels() -> None:
    """Static bindings win over labels; a statically bound namespace the cluster lacks is not listed."""
    namespaces: list[dict[str, Any]] = [
        {"metadata": {"name": "acme-prod", "labels": {c.LABEL_ENV: "dev", c.LABEL_TENANT: "other"}}},
        {"metadata": {"name": "beta-prod", "labels": {c.LABEL_ENV: "prod", c.LABEL_TENANT: "beta"}}},
        {"metadata": {"name": "half", "labels": {c.LABEL_ENV: "prod"}}},
        {"metadata": {"name": "plain"}},
    ]
    cluster = bound_namespaces(namespaces, CONFIG)
    assert dict(cluster.bound) == {
        "acme-prod": NamespaceBinding("prod", "acme", "core"),
        "beta-prod": NamespaceBinding("prod", "beta", "default"),
    }
    assert cluster.present == {"acme-prod", "beta-prod", "half", "plain"}
    assert dict(cluster.problems) == {"half": f"{c.LABEL_ENV} set without {c.LABEL_TENANT}"}


def test_a_namespace_whose_labels_do_not_bind_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """A namespace labelled for an environment but without a tenant is not audited, and the log says so
    (label keys, never values)."""
    reader = MemoryReader(["acme-prod", "half"], labels={"half": {c.LABEL_ENV: "CANARY-env"}})
    with caplog.at_level(logging.WARNING, logger="gtc_admission.cluster_audit"):
        audited = [a.namespace for a in audit_cluster(reader, CONFIG)]
    assert audited == ["acme-prod"]
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [f"namespace half is not audited: {c.LABEL_ENV} set without {c.LABEL_TENANT}"]


def test_dev_store_namespaces_are_not_read() -> None:
    """A namespace of a dev-store environment is bound but never audited (no rule applies there)."""
    reader = MemoryReader(["acme-dev"], {"pods": [running_pod("w", "acme-dev", WORKER, pod_spec())]})
    assert list(audit_cluster(reader, CONFIG)) == []
    assert reader.selectors == []
    with pytest.raises(NamespaceNotFound):
        list(audit_cluster(reader, CONFIG, namespace="elsewhere"))


def test_a_pod_patched_with_an_older_config_is_not_on_vault() -> None:
    """A marked pod the webhook would patch differently now (Vault moved) is reported, naming what changes."""
    pod = patched(running_pod("w-1", "acme-prod", WORKER, pod_spec()), CONFIG)
    moved = copy.deepcopy(pod)
    moved["metadata"]["name"] = "w-2"
    for entry in moved["spec"]["containers"][0]["env"]:
        if entry["name"] == c.ENV_VAULT_ADDR:
            entry["value"] = "https://old-vault.example:8200"
    [audit] = audit_cluster(MemoryReader(["acme-prod"], {"pods": [pod, moved]}), CONFIG)
    stale = [f for f in audit.findings if f.rule == c.AUDIT_RULE_NOT_ON_VAULT]
    assert [f.resource.name for f in stale] == ["w-2"]
    assert "differs from what the webhook makes of a worker now" in stale[0].message
    assert "/spec/containers/0/env/" in stale[0].message
    assert stale[0].action == "re-create the pod: kubectl -n acme-prod delete pod w-2, then apply it again"


def test_an_object_that_cannot_be_judged_is_an_error_result_and_the_audit_goes_on() -> None:
    """A pod with a broken spec is reported (invalid-object); the next pod is still judged."""
    broken = running_pod("broken", "acme-prod", WORKER, pod_spec())
    broken["spec"]["containers"] = "not a list"
    fine = running_pod("old", "acme-prod", WORKER, pod_spec())
    [audit] = audit_cluster(MemoryReader(["acme-prod"], {"pods": [broken, fine]}), CONFIG)
    rules = {(f.resource.name, f.rule) for f in audit.findings}
    assert ("broken", c.RULE_INVALID_OBJECT) in rules
    assert ("old", c.AUDIT_RULE_NOT_ON_VAULT) in rules
    assert audit.checked == 2


def test_running_pods_only() -> None:
    """Pods are listed with a field selector that leaves out ended ones."""
    reader = MemoryReader(["acme-prod"])
    list(audit_cluster(reader, CONFIG))
    assert (POD.plural, "status.phase!=Succeeded,status.phase!=Failed") in reader.selectors


def _audit_with(findings: int) -> NamespaceAudit:
    ref = ObjectRef("v1", "Pod", "p", "acme-prod", "uid-1")
    finding = AuditFinding(
        ref, c.AUDIT_RULE_NOT_ON_VAULT, "worker pod p runs without the Vault patch", "fail", "high"
    )
    return NamespaceAudit("acme-prod", PROD, "deny", findings + 3, (finding,) * findings)


def test_policy_report_caps_its_results_and_keeps_exact_counts() -> None:
    """Past MAX_REPORT_RESULTS a report keeps the first results and exact counts, and says how many it left
    out."""
    many = cluster_report.MAX_REPORT_RESULTS + 5
    report = cluster_report.policy_report(_audit_with(many), seconds=1_700_000_000)
    assert len(report["results"]) == cluster_report.MAX_REPORT_RESULTS
    assert report["summary"]["fail"] == many
    assert report["metadata"]["annotations"] == {cluster_report.ANNOTATION_RESULTS_LEFT_OUT: "5"}
    small = cluster_report.policy_report(_audit_with(1), seconds=1_700_000_000)
    assert "annotations" not in small["metadata"]
    assert small["results"][0]["timestamp"] == {"seconds": 1_700_000_000, "nanos": 0}
    assert yaml.safe_load(cluster_report.yaml_document(small)) == small


def test_secret_values_never_reach_a_report() -> None:
    """Canary: even a reader that (wrongly) hands out a whole Secret gets no value into any output."""

    class LeakyReader(MemoryReader):
        def secret_metadata(self, namespace: str, name: str) -> Iterator[Mapping[str, Any]]:
            yield secret(name, namespace)

    reader = LeakyReader(["acme-prod"], {"secrets": [secret(DEV_SECRET, "acme-prod")]})
    [audit] = audit_cluster(reader, CONFIG)
    assert [f.rule for f in audit.findings] == [c.RULE_DEV_SECRET_OBJECT]
    outputs = [
        cluster_report.table(audit),
        cluster_report.json_lines(audit),
        cluster_report.yaml_document(cluster_report.policy_report(audit, seconds=0)),
    ]
    assert all(CANARY not in text and "TELEGRAM_TOKEN" not in text for text in outputs)


def test_the_cluster_reader_never_lists_whole_secrets() -> None:
    """KubernetesCluster.objects refuses Secrets before any request: only secret_metadata lists them."""
    cluster = KubernetesCluster(k8s_client.ApiClient(), ClusterSettings(ClusterCredentials(False, "unused")))
    try:
        with pytest.raises(ValueError, match="only listed as metadata"):
            cluster.objects(SECRET, "acme-prod")
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("environ", "context", "in_cluster", "kubeconfig"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None, True, None),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBECONFIG": "/k"}, "ops", False, "/k"),
        ({"KUBECONFIG": "/a:/b"}, None, False, "/a:/b"),
        ({}, None, False, "~/.kube/config"),
    ],
)
def test_where_the_credentials_come_from(
    environ: dict[str, str], context: str | None, in_cluster: bool, kubeconfig: str | None
) -> None:
    """In a pod its ServiceAccount, unless --context asks for a kubeconfig; else KUBECONFIG or the default."""
    settings = cluster_settings_from_env(environ, context=context, page_size=7)
    assert settings.credentials.in_cluster is in_cluster
    assert settings.credentials.kubeconfig == kubeconfig
    assert (settings.context, settings.page_size) == (context, 7)
