"""Issue 4 end to end, on a kind cluster: one function per check the issue lists.

The ``cluster`` fixture (e2e/conftest.py) deploys everything once per session; each test leaves the
cluster as it found it (what it creates it deletes in ``finally``, a policy it removes it restores), so the
tests run in any order. Nothing here prints the seeded value: assertions compare it and report names.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from e2e import helpers as h
from e2e import kube
from e2e.plan import label_selector
from e2e.stack import ROUTER_ENV, Cluster
from gtc_admission import constants as c
from gtc_secrets.cli import EXIT_UNAVAILABLE
from gtc_secrets.constants import ENV_BOOT_TIMEOUT, transit_key_name
from gtc_secrets.refs import Scope, parse_reference

pytestmark = pytest.mark.e2e

DEV_SECRET = "gtc-dev-secrets"  # the old Secret the deployers used
WRONG_SECRET = "not-the-webhook-secret"
# The runtime's message when Vault stays unreachable for the whole boot timeout (gtc_secrets.resolve).
VAULT_UNAVAILABLE_MESSAGE = "Vault still unavailable"
# A short boot timeout for the worker cut off from Vault: it fails in seconds instead of the default 30.
CUT_OFF_BOOT_TIMEOUT_S = "10"
CHAOS_ROUNDS = 3
CHAOS_WINDOW_S = 20.0
CHAOS_BARE_PODS_PER_ROUND = 4
CHAOS_SAMPLE_INTERVAL_S = 1.0
CHAOS_LABEL = "e2e.greentic.ai/chaos"


def post_hook(cluster: Cluster, secret: str | None) -> int:
    """POST the demo worker's inbound webhook through a port-forward to its Service; the HTTP status."""
    worker = cluster.plan.worker
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[cluster.layout.worker_secret_header] = secret
    with cluster.port_forward(worker.namespace, f"svc/{worker.service}", worker.service_port) as port:
        url = f"http://127.0.0.1:{port}{cluster.layout.worker_hook_path}"
        return kube.http_post_status(url, headers=headers, body=b'{"event": "e2e"}')


def pods_of(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.pods(selector).get("items") or []
    return items


# ---------------------------------------------------------------------------------------------
# The worker runs as gtc-worker with the Vault settings; the router runs unchanged.
# ---------------------------------------------------------------------------------------------


def test_worker_runs_as_gtc_worker_with_the_vault_settings(cluster: Cluster) -> None:
    """The deployer's Deployment has no ServiceAccount and no Vault setting; its pod has both, and is Ready
    (the demo worker starts only once gtc-secrets has resolved its secret from Vault)."""
    worker = cluster.plan.worker
    deployment = cluster.kubectl.json("get", "deployment", worker.deployment, "-n", worker.namespace)
    template = deployment["spec"]["template"]["spec"]
    assert template.get("serviceAccountName") in (None, "", c.DEFAULT_SERVICE_ACCOUNT)
    assert not [
        e["name"]
        for ct in template["containers"]
        for e in ct.get("env") or []
        if e["name"].startswith("VAULT_")
    ]

    pods = pods_of(cluster, worker.selector)
    assert pods, f"no pod of deployment/{worker.deployment}"
    expected = cluster.expected_worker_env()
    for pod in pods:
        assert h.worker_problems(pod, expected, cluster.badge) == [], h.pod_summary(pod)
        assert h.pod_ready(pod), h.pod_summary(pod)


def test_router_runs_unchanged(cluster: Cluster) -> None:
    """The router pod runs as `default`, with exactly its deployer's env, no token volume, no marker."""
    pods = pods_of(cluster, f"app={cluster.router.name}")
    assert pods, "no router pod"
    for pod in pods:
        assert h.router_problems(pod, ROUTER_ENV) == [], h.pod_summary(pod)
        assert h.pod_ready(pod), h.pod_summary(pod)


# ---------------------------------------------------------------------------------------------
# The inbound webhook.
# ---------------------------------------------------------------------------------------------


def test_inbound_webhook_answers_200_with_the_right_secret(cluster: Cluster) -> None:
    """The caller presenting the value seeded with `gtc-secrets put` is accepted: the worker holds it."""
    status = post_hook(cluster, cluster.seeded_value)
    assert status == 200


def test_inbound_webhook_answers_401_with_a_wrong_secret(cluster: Cluster) -> None:
    """A wrong secret, and no secret at all, are refused."""
    assert post_hook(cluster, WRONG_SECRET) == 401
    assert post_hook(cluster, None) == 401


# ---------------------------------------------------------------------------------------------
# Listing the cluster's Secrets reveals nothing.
# ---------------------------------------------------------------------------------------------


def test_no_secret_named_gtc_dev_secrets_exists(cluster: Cluster) -> None:
    """No namespace has a Secret with a forbidden name (gtc-dev-secrets)."""
    listed = cluster.kubectl.json("get", "secrets", "--all-namespaces")
    assert listed.get("items"), "the Secret listing came back empty: the check would prove nothing"
    assert DEV_SECRET in cluster.plan.webhook.config.forbidden_secrets
    for name in sorted(cluster.plan.webhook.config.forbidden_secrets):
        assert h.secret_ids(listed, name) == []


def test_no_secret_in_the_worker_namespace_holds_the_seeded_value(cluster: Cluster) -> None:
    """Every Secret's data is decoded and searched for the seeded value: in the worker namespace, and in
    the whole cluster. Control: the same scan finds the webhook's certificate in its TLS Secret, so the
    scan does decode what the API server returns."""
    in_namespace = cluster.kubectl.json("get", "secrets", "-n", cluster.namespace)
    assert h.secrets_holding(in_namespace, cluster.seeded_value) == []
    everywhere = cluster.kubectl.json("get", "secrets", "--all-namespaces")
    assert h.secrets_holding(everywhere, cluster.seeded_value) == []

    certificate = (cluster.deploy / cluster.layout.webhook_tls / "tls.crt").read_text()
    control = h.secrets_holding(everywhere, certificate)
    assert f"{cluster.plan.webhook.namespace}/gtc-admission-tls:tls.crt" in control


# ---------------------------------------------------------------------------------------------
# References to gtc-dev-secrets are refused at apply time, with the rule id.
# ---------------------------------------------------------------------------------------------


def test_pod_referencing_gtc_dev_secrets_is_refused_at_apply(cluster: Cluster) -> None:
    """`kubectl apply` of a worker pod that reads gtc-dev-secrets fails with [dev-secret-reference]."""
    pod = h.with_dev_secret(h.pod_manifest(cluster.worker_app("dev-secret-pod")), DEV_SECRET)
    try:
        result = cluster.kubectl.apply([pod], check=False)
        assert result.returncode != 0, "the pod was admitted"
        assert h.refused_with_rule(result.stderr, c.RULE_DEV_SECRET_REFERENCE), result.stderr
        assert "spec.containers[0].envFrom[0].secretRef.name" in result.stderr
        lookup = cluster.kubectl.run("get", "pod", "dev-secret-pod", "-n", cluster.namespace, check=False)
        assert lookup.returncode != 0, "the refused pod exists"
    finally:
        cluster.kubectl.delete("pod", "dev-secret-pod", "-n", cluster.namespace)


def test_deployment_referencing_gtc_dev_secrets_is_refused_at_apply(cluster: Cluster) -> None:
    """A Deployment whose pod template reads gtc-dev-secrets is refused when applied (not later, as a
    ReplicaSet event nobody reads), with [dev-secret-reference]."""
    deployment = h.with_dev_secret(h.deployment_manifest(cluster.worker_app("dev-secret-deploy")), DEV_SECRET)
    try:
        result = cluster.kubectl.apply([deployment], check=False)
        assert result.returncode != 0, "the Deployment was admitted"
        assert h.refused_with_rule(result.stderr, c.RULE_DEV_SECRET_REFERENCE), result.stderr
        lookup = cluster.kubectl.run(
            "get", "deployment", "dev-secret-deploy", "-n", cluster.namespace, check=False
        )
        assert lookup.returncode != 0, "the refused Deployment exists"
    finally:
        cluster.kubectl.delete("deployment", "dev-secret-deploy", "-n", cluster.namespace)


def test_the_dev_secret_itself_is_refused_at_apply_and_other_secrets_are_not(cluster: Cluster) -> None:
    """`kubectl apply` of the old Secret gtc-dev-secrets fails with [dev-secret-object], without echoing a
    key or a value; a Secret of another name never reaches the webhook (matchConditions) and is created."""
    canary = "e2e-canary-" + secrets.token_hex(8)
    dev_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DEV_SECRET, "namespace": cluster.namespace},
        "stringData": {"TELEGRAM_TOKEN": canary},
    }
    other = {**dev_secret, "metadata": {"name": "e2e-app-settings", "namespace": cluster.namespace}}
    try:
        result = cluster.kubectl.apply([dev_secret], check=False)
        assert result.returncode != 0, "the dev Secret was admitted"
        assert h.refused_with_rule(result.stderr, c.RULE_DEV_SECRET_OBJECT), result.stderr
        assert canary not in result.stderr + result.stdout
        assert "TELEGRAM_TOKEN" not in result.stderr
        assert "gtc-secrets put" in result.stderr
        lookup = cluster.kubectl.run("get", "secret", DEV_SECRET, "-n", cluster.namespace, check=False)
        assert lookup.returncode != 0, "the refused Secret exists"
        cluster.kubectl.apply([other])
    finally:
        cluster.kubectl.delete("secret", "e2e-app-settings", "-n", cluster.namespace)


# ---------------------------------------------------------------------------------------------
# Vault's audit log.
# ---------------------------------------------------------------------------------------------


def test_vault_audit_log_shows_login_kv_read_and_transit_decrypt_for_the_worker(cluster: Cluster) -> None:
    """For system:serviceaccount:<ns>:gtc-worker: a Kubernetes login with its team's role, a read of
    the seeded secret's KV path, a decrypt with the tenant's transit key; the value itself is not there."""
    worker = cluster.plan.worker
    environment = cluster.plan.webhook.config.environments[worker.env]
    assert environment.vault is not None
    vault = environment.vault
    ref = parse_reference(worker.secret_ref, Scope(env=worker.env, tenant=worker.tenant, team=worker.team))
    kv_path = f"{vault.kv_mount}/data/{vault.kv_prefix}/{ref.logical_path}"

    text = cluster.vault_audit_text()
    trail = h.worker_trail(
        h.parse_audit_lines(text),
        namespace=worker.namespace,
        service_account=cluster.badge,
        role=cluster.expected_worker_env()[c.ENV_VAULT_ROLE],
        kv_mount=vault.kv_mount,
        transit_key=transit_key_name(worker.env, worker.tenant),
    )
    assert trail.logins, "no Kubernetes login of the worker in the audit log"
    assert kv_path in trail.kv_reads, f"no read of {kv_path}; reads seen: {trail.kv_reads}"
    assert trail.decrypts, "no transit decrypt by the worker in the audit log"
    assert cluster.seeded_value not in text


# ---------------------------------------------------------------------------------------------
# The Vault ingress NetworkPolicy: removed, a new worker cannot log in; restored, it can.
# ---------------------------------------------------------------------------------------------


def test_without_vault_ingress_policy_a_new_worker_cannot_log_in_and_restored_it_can(
    cluster: Cluster,
) -> None:
    """The seed demo's networking gap as a test: deny-by-default around Vault without the ingress policy
    leaves a new worker unable to reach Vault; it exits with the runtime's clear message. Re-applying the
    policy (from deploy/vault, as rendered) lets a fresh pod of the same Deployment start."""
    k = cluster.kubectl
    layout = cluster.layout
    policy = cluster.plan.vault_ingress_policy
    app = cluster.worker_app("cut-off-worker", env={ENV_BOOT_TIMEOUT: CUT_OFF_BOOT_TIMEOUT_S})
    selector = f"app={app.name}"

    def exited_unavailable() -> dict[str, Any] | None:
        for pod in pods_of(cluster, selector):
            if EXIT_UNAVAILABLE in h.terminated_exit_codes(pod):
                return pod
        return None

    def describe() -> str:
        return "; ".join(h.pod_summary(p) for p in pods_of(cluster, selector)) or "no pod"

    try:
        k.delete("networkpolicy", layout.vault_ingress_policy, "-n", layout.vault_namespace)
        try:
            k.apply([h.deployment_manifest(app)])
            pod = h.poll(
                exited_unavailable,
                timeout=240,
                interval=3,
                what=f"a {app.name} pod exiting {EXIT_UNAVAILABLE} (Vault unreachable)",
                describe=describe,
            )
            name = pod["metadata"]["name"]
            log = k.logs(cluster.namespace, name, previous=True) + k.logs(cluster.namespace, name)
            assert VAULT_UNAVAILABLE_MESSAGE in log, f"the worker's log does not say why: {log[-2000:]}"
            assert cluster.seeded_value not in log
            assert not any(h.pod_ready(p) for p in pods_of(cluster, selector))
        finally:
            k.apply([policy])

        # A fresh pod (the crashed one would wait out CrashLoopBackOff first) logs in and starts.
        k.run("delete", "pods", "-n", cluster.namespace, "-l", selector, "--wait=true", timeout=120)
        k.rollout_status(cluster.namespace, f"deployment/{app.name}", timeout=240)
        ready = [p for p in pods_of(cluster, selector) if h.pod_ready(p)]
        assert ready, describe()
        for pod in ready:
            assert h.worker_problems(pod, cluster.expected_worker_env(), cluster.badge) == []
    finally:
        k.apply([policy])
        k.delete("deployment", app.name, "-n", cluster.namespace)


# ---------------------------------------------------------------------------------------------
# Webhook pods deleted while workers are created: no unpatched worker ever exists.
# ---------------------------------------------------------------------------------------------


def test_deleting_webhook_pods_never_lets_an_unpatched_worker_through(cluster: Cluster) -> None:
    """Round after round, every webhook pod is deleted while a worker Deployment scales up and bare worker
    pods are applied. failurePolicy Fail must refuse what no webhook judged: at every sample, every pod in
    the worker namespace with the worker label runs as gtc-worker on Vault. The outage must really have
    been hit (some creation refused), and once the webhook is back every replica gets created."""
    k = cluster.kubectl
    namespace = cluster.namespace
    webhook = cluster.plan.webhook
    all_workers = label_selector(h.WORKER_LABELS)
    chaos = {CHAOS_LABEL: "true"}
    deployment = cluster.worker_app("chaos-worker", labels=chaos)
    refused: list[str] = []
    admitted: list[str] = []
    samples = 0

    def sample() -> None:
        nonlocal samples
        pods = cluster.pods(all_workers)
        samples += 1
        unpatched = h.unpatched_workers(pods, cluster.badge)
        assert unpatched == [], f"worker pods not on {cluster.badge}: {unpatched}"

    replicas = 0
    try:
        k.apply([h.deployment_manifest(deployment, replicas=0)])
        for round_no in range(CHAOS_ROUNDS):
            k.run("delete", "pods", "-n", webhook.namespace, "-l", webhook.selector, "--wait=false")
            replicas += 2
            k.run("scale", "-n", namespace, f"deployment/{deployment.name}", f"--replicas={replicas}")
            deadline = time.monotonic() + CHAOS_WINDOW_S
            bare = 0
            while time.monotonic() < deadline:
                if bare < CHAOS_BARE_PODS_PER_ROUND:
                    name = f"chaos-pod-{round_no}-{bare}"
                    bare += 1
                    result = k.apply([h.pod_manifest(cluster.worker_app(name, labels=chaos))], check=False)
                    if result.returncode == 0:
                        admitted.append(name)
                    else:
                        # Only the fail-closed refusal is expected here; anything else is a real failure.
                        assert "webhook" in result.stderr, result.stderr
                        refused.append(name)
                else:
                    # Pace the remaining samples: one listing a second is plenty, and this is not a wait
                    # for anything (the window ends by the clock either way).
                    time.sleep(CHAOS_SAMPLE_INTERVAL_S)
                sample()
            k.rollout_status(webhook.namespace, f"deployment/{webhook.deployment}", timeout=300)

        def all_replicas_created() -> int | None:
            made = pods_of(cluster, f"app={deployment.name}")
            return len(made) if len(made) >= replicas else None

        h.poll(all_replicas_created, timeout=300, interval=3, what=f"{replicas} chaos-worker pods created")
        sample()
        assert refused, "no creation was refused: the webhook outage was never hit, so nothing was tested"
        assert samples >= CHAOS_ROUNDS
    finally:
        k.delete("deployment", deployment.name, "-n", namespace, timeout=180)
        k.delete("pods", "-n", namespace, "-l", label_selector(chaos), timeout=180)
