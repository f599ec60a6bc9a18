"""The deployed system the kind suite tests, and the steps that deploy it (the I/O; no pytest here).

e2e/conftest.py runs these steps in order in its session fixture; see its docstring for the sequence and
the teardown. Every step is a function, so a failure names the step that failed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e import helpers as h
from e2e import kube
from e2e.layout import DEPLOY, LAYOUT, ROOT, Layout, ignore_generated
from e2e.plan import DeployPlan, deploy_plan, expected_worker_env, label_selector, worker_app

ROLLOUT_TIMEOUT_S = 300
# Vault calls the TokenReview API from inside the cluster: this is the API server as Vault sees it.
KUBERNETES_HOST_IN_CLUSTER = "https://kubernetes.default.svc"
BIN = Path(sys.executable).parent
ROUTER_ENV: Mapping[str, str] = {"ROUTER_MODE": "e2e"}


def tool(name: str) -> str:
    """A console script of this virtualenv (gtc-admission, gtc-secrets), else the one on PATH."""
    beside = BIN / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (make e2e installs the project first)")
    return found


def operator_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any VAULT_*/BAO_* the user has set (they would point the
    operator commands somewhere else), plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    return {**base, **extra}


@dataclass
class Cluster:
    """Everything the tests need to reach the deployed system (see the module docstring)."""

    kind: kube.Kind
    kubectl: kube.Kubectl
    workdir: Path
    deploy: Path
    layout: Layout
    plan: DeployPlan
    seeded_value: str = field(repr=False)
    router: h.App = field(repr=False)

    @property
    def badge(self) -> str:
        return self.plan.webhook.config.service_account

    @property
    def namespace(self) -> str:
        return self.plan.worker.namespace

    def expected_worker_env(self) -> dict[str, str]:
        return expected_worker_env(self.plan)

    def worker_app(
        self, name: str, *, env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None
    ) -> h.App:
        return worker_app(self.plan.worker, name, env=env, labels=labels)

    def pods(self, selector: str) -> dict[str, Any]:
        return self.kubectl.pods(self.namespace, selector)

    def vault_audit_text(self) -> str:
        """The file audit device's content, read inside the Vault pod (``kubectl exec ... cat``)."""
        return self.kubectl.run(
            "exec", "-n", self.layout.vault_namespace, self.layout.vault_workload, "--",
            "cat", self.layout.vault_audit_file,
            timeout=120,
        ).stdout  # fmt: skip

    def port_forward(self, namespace: str, target: str, port: int) -> contextlib.AbstractContextManager[int]:
        log = self.workdir / f"port-forward-{target.replace('/', '-')}-{secrets.token_hex(3)}.log"
        return kube.port_forward(self.kubectl, namespace, target, port, log_file=log)


# ---------------------------------------------------------------------------------------------
# Set-up steps (each a function, so a failure names its step).
# ---------------------------------------------------------------------------------------------


def gtc_admission_certs(out: Path, dns: tuple[str, ...], ips: tuple[str, ...] = ()) -> None:
    argv = [tool("gtc-admission"), "certs", "--out", str(out), "--dns", *dns]
    if ips:
        argv += ["--ip", *ips]
    kube.run(argv, timeout=120)


def prepare_deploy(workdir: Path, layout: Layout) -> Path:
    """A copy of deploy/ with fresh certificates for the demo Vault and the webhook, and the Vault's CA
    where the example namespace makes its CA ConfigMap from (docs/install.md, step 5)."""
    copy = workdir / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=ignore_generated)
    gtc_admission_certs(copy / layout.vault_tls, layout.vault_dns, layout.vault_ips)
    gtc_admission_certs(copy / layout.webhook_tls, layout.webhook_dns)
    shutil.copy(copy / layout.vault_tls / "ca.crt", copy / layout.example_vault_ca)
    return copy


def render_plan(kubectl: kube.Kubectl, deploy: Path, layout: Layout) -> DeployPlan:
    """Render the three kustomizations (no cluster needed) and read what the suite deploys."""

    def render(folder: str) -> list[dict[str, Any]]:
        return h.load_documents(kubectl.kustomize(deploy / folder))

    return deploy_plan(
        vault=render(layout.vault_kustomization),
        webhook=render(layout.webhook_overlay),
        example=render(layout.example_namespace),
        layout=layout,
    )


def create_cluster(kind: kube.Kind, workdir: Path) -> None:
    config_file = workdir / "kind.yaml"
    # Two worker nodes: the webhook's two replicas can spread as its anti-affinity prefers, and the
    # chaos test's pods do not land on the control plane's node alone.
    config_file.write_text(kube.to_yaml([h.kind_config(workers=2)]))
    kind.create(config_file)


def build_and_load_images(kind: kube.Kind, plan: DeployPlan, layout: Layout) -> None:
    """Build the webhook and demo worker images from the checkout, put them on the kind nodes."""
    # The checkout's Dockerfiles (inside the build context, beside their .dockerignore files).
    kube.docker_build(tag=plan.webhook.image, dockerfile=DEPLOY / layout.webhook_dockerfile, context=ROOT)
    # No CA baked in: the worker trusts the demo Vault through the CA ConfigMap the webhook projects.
    kube.docker_build(tag=plan.worker.image, dockerfile=DEPLOY / layout.worker_dockerfile, context=ROOT)
    for image in (plan.webhook.image, plan.worker.image):
        kind.load_image(image)


def deploy_vault(kubectl: kube.Kubectl, deploy: Path, layout: Layout) -> str:
    """Apply deploy/vault, wait for it, return the dev-mode root token (from the pod log; never printed)."""
    kubectl.apply_kustomization(deploy / layout.vault_kustomization)
    kubectl.rollout_status(layout.vault_namespace, layout.vault_workload, timeout=ROLLOUT_TIMEOUT_S)

    def token() -> str | None:
        log = kubectl.run(
            "logs", "-n", layout.vault_namespace, layout.vault_workload, timeout=60, check=False
        )
        return h.root_token_from_log(log.stdout)

    return h.poll(token, timeout=120, interval=2, what="the dev-mode root token in the Vault log")


def bootstrap_vault(
    kubectl: kube.Kubectl, workdir: Path, plan: DeployPlan, layout: Layout, admin: dict[str, str]
) -> None:
    """``gtc-secrets bootstrap`` as an operator runs it against the in-cluster Vault."""
    reviewer_jwt = workdir / "reviewer.jwt"
    token = kubectl.run(
        "create", "token", layout.token_reviewer_service_account, "-n", layout.vault_namespace,
        "--duration", "24h", timeout=60,
    ).stdout.strip()  # fmt: skip
    reviewer_jwt.touch(mode=0o600)
    reviewer_jwt.write_text(token)
    kube_ca = workdir / "kube-ca.pem"
    kube_ca.write_text(
        h.kube_ca_from_configmap(kubectl.json("get", "configmap", "kube-root-ca.crt", "-n", "default"))
    )
    worker = plan.worker
    kube.run(
        [
            tool("gtc-secrets"), "bootstrap", "--env", worker.env, "--tenant", worker.tenant,
            # The team's own role, as the example config's role template gtc-{env}-{tenant}-{team} names it.
            "--team", f"{worker.team}={worker.namespace}",
            "--service-account", plan.webhook.config.service_account,
            "--audience", plan.webhook.config.vault_token.audience,
            "--kubernetes-host", KUBERNETES_HOST_IN_CLUSTER,
            "--kubernetes-ca", str(kube_ca),
            "--token-reviewer-jwt", str(reviewer_jwt),
        ],
        env=operator_environ(admin),
        timeout=180,
    )  # fmt: skip


def seed_secret(plan: DeployPlan, admin: dict[str, str], value: str) -> None:
    """``gtc-secrets put`` of the worker's webhook secret, the value on stdin (never argv)."""
    worker = plan.worker
    kube.run(
        [
            tool("gtc-secrets"), "put", worker.secret_ref,
            "--env", worker.env, "--tenant", worker.tenant, "--team", worker.team,
        ],
        input_text=value + "\n",
        env=operator_environ(admin),
        timeout=120,
    )  # fmt: skip


def deploy_webhook(kubectl: kube.Kubectl, deploy: Path, plan: DeployPlan, layout: Layout) -> None:
    kubectl.apply_kustomization(deploy / layout.webhook_overlay)
    kubectl.rollout_status(
        plan.webhook.namespace, f"deployment/{plan.webhook.deployment}", timeout=ROLLOUT_TIMEOUT_S
    )


def router_app(plan: DeployPlan) -> h.App:
    """A router as its deployer writes it. Any long-running process will do: what matters is what the
    webhook does NOT do to it. It runs from the worker image (the only one on the nodes) with its own
    command, so the image's ``gtc-secrets exec`` entrypoint is not involved."""
    return h.App(
        name="router",
        namespace=plan.worker.namespace,
        image=plan.worker.image,
        labels=h.ROUTER_LABELS,
        env=ROUTER_ENV,
        command=["python", "-c", "import time\nwhile True:\n    time.sleep(3600)"],
    )


def deploy_workloads(
    kubectl: kube.Kubectl, deploy: Path, plan: DeployPlan, layout: Layout, router: h.App
) -> None:
    """The example namespace (+ component + demo worker) as shipped, then the router."""
    kubectl.apply_kustomization(deploy / layout.example_namespace)
    kubectl.apply([h.deployment_manifest(router)])
    for name in (plan.worker.deployment, router.name):
        kubectl.rollout_status(plan.worker.namespace, f"deployment/{name}", timeout=ROLLOUT_TIMEOUT_S)


def write_diagnostics(kubectl: kube.Kubectl, workdir: Path, plan: DeployPlan | None) -> Path:
    """The cluster's state after a failure, for whoever reads the report (no Secret is ever dumped)."""
    folder = workdir / "diagnostics"
    folder.mkdir(exist_ok=True)
    commands: dict[str, list[str]] = {
        "pods.txt": ["get", "pods", "-A", "-o", "wide"],
        "events.txt": ["get", "events", "-A", "--sort-by=.lastTimestamp"],
        "deployments.txt": ["get", "deployments", "-A", "-o", "wide"],
        "networkpolicies.yaml": ["get", "networkpolicies", "-A", "-o", "yaml"],
        "webhooks.yaml": [
            "get",
            "mutatingwebhookconfigurations,validatingwebhookconfigurations",
            "-o",
            "yaml",
        ],
        "vault.log": ["logs", "-n", LAYOUT.vault_namespace, LAYOUT.vault_workload, "--tail=300"],
    }
    if plan is not None:
        commands["webhook.log"] = [
            "logs", "-n", plan.webhook.namespace, "-l", plan.webhook.selector, "--tail=500", "--prefix",
        ]  # fmt: skip
        commands["workers.log"] = [
            "logs", "-n", plan.worker.namespace, "-l", label_selector(h.WORKER_LABELS),
            "--tail=200", "--prefix",
        ]  # fmt: skip
    for name, args in commands.items():
        try:
            result = kubectl.run(*args, timeout=120, check=False)
        except kube.CommandFailed as exc:
            (folder / name).write_text(str(exc))
            continue
        text = result.stdout + result.stderr
        # The dev Vault prints its root token at start; the file must not keep it.
        token = h.root_token_from_log(text)
        (folder / name).write_text(text.replace(token, "<redacted>") if token else text)
    return folder
