"""A cluster that ran the old deployer before the webhook was installed, loaded into the API stand-in.

Used by the audit tests, the audit outputs of the README and docs/audit.md, and the audit benchmark.
Objects look as the API server stores them: controllers own what they create (``ownerReferences`` with
``controller: true``), pods of a ReplicaSet are named after it, and a "patched" pod is exactly what the
webhook's patch makes of the unpatched one (built with the offline review, so it cannot drift from the
webhook).

With the example config (deploy/webhook/config.yaml): acme-prod is bound statically (env prod, Vault,
deny), beta-prod by its labels (env prod), acme-dev to the dev store; kube-system to nothing.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any, Final

import jsonpatch

from gtc_admission import constants as c
from gtc_admission.bindings import StaticBindings
from gtc_admission.config import Config, NamespaceBinding, load_config
from gtc_admission.offline import review_document
from tests.support.kube_api import KubeApiStandIn
from tests.unit.conftest import as_admitted

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG: Final = ROOT / "deploy" / "webhook" / "config.yaml"
DEV_SECRET: Final = "gtc-dev-secrets"
# The value of every key of every Secret: it must never appear in any output of the audit.
CANARY: Final = "CANARY-audit-7c1e-never-print-me"
WORKER: Final = {"greentic.ai/component": c.COMPONENT_WORKER}
ROUTER: Final = {"greentic.ai/component": c.COMPONENT_ROUTER}
BETA: Final = NamespaceBinding("prod", "beta")  # beta-prod's labels
IMAGE: Final = "ghcr.io/greentic/worker:1.4"


def example_config() -> Config:
    return load_config(EXAMPLE_CONFIG)


def secret(name: str, namespace: str) -> dict[str, Any]:
    value = base64.b64encode(CANARY.encode()).decode()
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "legacy-deployer"}},
        "type": "Opaque",
        "data": {"TELEGRAM_TOKEN": value, "OPENAI_API_KEY": value},
    }


def pod_spec(*, dev_secret: bool = False, service_account: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "worker",
        "image": IMAGE,
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
    }
    if dev_secret:
        container["envFrom"] = [{"secretRef": {"name": DEV_SECRET}}]
    spec: dict[str, Any] = {"containers": [container]}
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec


def _owned_by(owner: dict[str, Any], api_version: str, kind: str) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [
        {
            "apiVersion": api_version,
            "kind": kind,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def workload(
    kind: str, name: str, namespace: str, labels: dict[str, str], spec: dict[str, Any]
) -> dict[str, Any]:
    template = {"metadata": {"labels": dict(labels)}, "spec": copy.deepcopy(spec)}
    body: dict[str, Any]
    if kind == "CronJob":
        body = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        body = {"selector": {"matchLabels": dict(labels)}, "template": template}
    return {"metadata": {"name": name, "namespace": namespace, "labels": dict(labels)}, "spec": body}


def running_pod(
    name: str,
    namespace: str,
    labels: dict[str, str],
    spec: dict[str, Any],
    *,
    owner: tuple[dict[str, Any], str, str] | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    """A pod as the API server stores it after admission, before the webhook existed (no patch): the
    ServiceAccount plugin gave it the Kubernetes API-token volume."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner is not None:
        meta["ownerReferences"] = _owned_by(*owner)
    pod = as_admitted({"metadata": meta, "spec": copy.deepcopy(spec)})
    pod["spec"]["nodeName"] = "node-1"
    pod["status"] = {"phase": phase, "podIP": "10.0.0.12"}
    return pod


def patched(pod: dict[str, Any], config: Config, binding: NamespaceBinding | None = None) -> dict[str, Any]:
    """The pod as it runs after the webhook's /mutate patch (what a restart gives); ``binding`` for a
    namespace the config does not bind."""
    namespace = pod["metadata"]["namespace"]
    bindings = dict(config.namespaces)
    if binding is not None:
        bindings[namespace] = binding
    document = {"apiVersion": "v1", "kind": "Pod", **pod}
    result = review_document(document, config=config, bindings=StaticBindings(bindings), namespace=namespace)
    encoded = result.review["response"].get("patch")
    assert result.allowed and encoded, "the pod is not one the webhook patches"
    operations = jsonpatch.JsonPatch.from_string(base64.b64decode(encoded).decode())
    out: dict[str, Any] = operations.apply(document)
    return {key: value for key, value in out.items() if key not in ("apiVersion", "kind")}


def load_legacy_cluster(api: KubeApiStandIn, config: Config) -> None:
    """The scenario of the audit outputs in the README and docs/audit.md (bindings: module docstring)."""
    api.add_namespace("acme-prod", {"kubernetes.io/metadata.name": "acme-prod"})
    api.add_namespace("beta-prod", {c.LABEL_ENV: BETA.env, c.LABEL_TENANT: BETA.tenant})
    api.add_namespace("acme-dev")
    api.add_namespace("kube-system")
    ns = "acme-prod"
    api.add("v1", "secrets", secret(DEV_SECRET, ns))
    api.add("v1", "secrets", secret("webhook-tls", ns))

    # The old deployer's worker: reads the dev Secret, its pod predates the webhook.
    legacy = api.add(
        "apps/v1",
        "deployments",
        workload("Deployment", "legacy-worker", ns, WORKER, pod_spec(dev_secret=True)),
    )
    legacy_rs = workload("ReplicaSet", "legacy-worker-7d9f8b6c5", ns, WORKER, pod_spec(dev_secret=True))
    legacy_rs["metadata"]["ownerReferences"] = _owned_by(legacy, "apps/v1", "Deployment")
    legacy_rs = api.add("apps/v1", "replicasets", legacy_rs)
    api.add(
        "v1",
        "pods",
        running_pod(
            "legacy-worker-7d9f8b6c5-x2k4q",
            ns,
            WORKER,
            pod_spec(dev_secret=True),
            owner=(legacy_rs, "apps/v1", "ReplicaSet"),
        ),
    )

    # A clean worker Deployment: one pod from before the webhook, one the webhook patched.
    worker = api.add(
        "apps/v1", "deployments", workload("Deployment", "telegram-worker", ns, WORKER, pod_spec())
    )
    worker_rs = workload("ReplicaSet", "telegram-worker-5c6d7", ns, WORKER, pod_spec())
    worker_rs["metadata"]["ownerReferences"] = _owned_by(worker, "apps/v1", "Deployment")
    worker_rs = api.add("apps/v1", "replicasets", worker_rs)
    owner = (worker_rs, "apps/v1", "ReplicaSet")
    api.add("v1", "pods", running_pod("telegram-worker-5c6d7-8bq2m", ns, WORKER, pod_spec(), owner=owner))
    # Patched by a webhook older than issue 10: on Vault, but it kept the Kubernetes API token.
    old_patch = patched(
        running_pod("telegram-worker-5c6d7-k3v8n", ns, WORKER, pod_spec(), owner=owner), config
    )
    api.add("v1", "pods", as_admitted(old_patch))
    api.add(
        "v1",
        "pods",
        patched(running_pod("telegram-worker-5c6d7-r7t9z", ns, WORKER, pod_spec(), owner=owner), config),
    )

    # A nightly CronJob whose current run started before the webhook; an earlier run has ended.
    nightly = api.add("batch/v1", "cronjobs", workload("CronJob", "nightly-digest", ns, WORKER, pod_spec()))
    job = workload("Job", "nightly-digest-29410", ns, WORKER, pod_spec())
    job["metadata"]["ownerReferences"] = _owned_by(nightly, "batch/v1", "CronJob")
    job = api.add("batch/v1", "jobs", job)
    api.add(
        "v1",
        "pods",
        running_pod("nightly-digest-29410-4xk8d", ns, WORKER, pod_spec(), owner=(job, "batch/v1", "Job")),
    )
    api.add(
        "v1",
        "pods",
        running_pod(
            "nightly-digest-29409-p0w1c",
            ns,
            WORKER,
            pod_spec(),
            owner=(job, "batch/v1", "Job"),
            phase="Succeeded",
        ),
    )

    # A router someone put on the workers' badge.
    api.add("v1", "pods", running_pod("router", ns, ROUTER, pod_spec(service_account=config.service_account)))

    # beta-prod, bound by its labels: only the dev Secret is left; its worker runs patched.
    api.add("v1", "secrets", secret(DEV_SECRET, "beta-prod"))
    store = api.add(
        "apps/v1", "statefulsets", workload("StatefulSet", "store-worker", "beta-prod", WORKER, pod_spec())
    )
    api.add(
        "v1",
        "pods",
        patched(
            running_pod(
                "store-worker-0", "beta-prod", WORKER, pod_spec(), owner=(store, "apps/v1", "StatefulSet")
            ),
            config,
            BETA,
        ),
    )

    # The dev store is allowed in acme-dev; kube-system is bound to nothing. Neither is reported.
    api.add("v1", "secrets", secret(DEV_SECRET, "acme-dev"))
    api.add("v1", "pods", running_pod("dev-worker", "acme-dev", WORKER, pod_spec(dev_secret=True)))
    api.add("v1", "pods", running_pod("coredns-1", "kube-system", {"k8s-app": "kube-dns"}, pod_spec()))


# What the audit must find in the legacy cluster: (namespace, kind, name, rule).
EXPECTED_FINDINGS: Final = {
    ("acme-prod", "Secret", DEV_SECRET, c.RULE_DEV_SECRET_OBJECT),
    ("acme-prod", "Deployment", "legacy-worker", c.RULE_DEV_SECRET_REFERENCE),
    ("acme-prod", "Pod", "legacy-worker-7d9f8b6c5-x2k4q", c.AUDIT_RULE_NOT_ON_VAULT),
    ("acme-prod", "Pod", "telegram-worker-5c6d7-8bq2m", c.AUDIT_RULE_NOT_ON_VAULT),
    ("acme-prod", "Pod", "telegram-worker-5c6d7-k3v8n", c.AUDIT_RULE_NOT_ON_VAULT),
    ("acme-prod", "Pod", "telegram-worker-5c6d7-k3v8n", c.RULE_WORKER_API_TOKEN),
    ("acme-prod", "Pod", "nightly-digest-29410-4xk8d", c.AUDIT_RULE_NOT_ON_VAULT),
    ("acme-prod", "Pod", "router", c.RULE_ROUTER_BADGE),
    ("beta-prod", "Secret", DEV_SECRET, c.RULE_DEV_SECRET_OBJECT),
}


def worker_pods(
    api: KubeApiStandIn,
    namespace: str,
    count: int,
    config: Config,
    *,
    binding: NamespaceBinding | None = None,
    unpatched_every: int = 10,
) -> None:
    """``count`` pods of one Deployment (the benchmark's load): every ``unpatched_every``-th predates the
    webhook, the others are patched."""
    deployment = api.add(
        "apps/v1", "deployments", workload("Deployment", "fleet", namespace, WORKER, pod_spec())
    )
    rs = workload("ReplicaSet", "fleet-6b7c8", namespace, WORKER, pod_spec())
    rs["metadata"]["ownerReferences"] = _owned_by(deployment, "apps/v1", "Deployment")
    rs = api.add("apps/v1", "replicasets", rs)
    template = running_pod(
        "fleet-6b7c8-00000", namespace, WORKER, pod_spec(), owner=(rs, "apps/v1", "ReplicaSet")
    )
    done = patched(template, config, binding)
    for index in range(count):
        pod = copy.deepcopy(template if index % unpatched_every == 0 else done)
        pod["metadata"]["name"] = f"fleet-6b7c8-{index:05d}"
        api.add("v1", "pods", pod)
