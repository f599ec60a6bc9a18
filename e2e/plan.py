"""What the suite deploys, read from deploy/'s rendered kustomizations (pure: rendered YAML in, a plan out).

Reading names from the manifests instead of repeating them keeps the suite in step with deploy/: a renamed
image, a new env var on the example worker, or another Vault address in the config reaches the tests
without an edit here, and a manifest the suite cannot use fails with a message naming what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from e2e import helpers as h
from e2e.layout import Layout
from gtc_admission import constants as c
from gtc_admission.config import Config, parse_config


class PlanError(AssertionError):
    """deploy/ does not render what the suite needs; the message names the kustomization and the object."""


@dataclass(frozen=True)
class WebhookPlan:
    namespace: str
    deployment: str
    selector: str
    image: str
    config: Config


@dataclass(frozen=True)
class WorkerPlan:
    """The example worker as the deployer wrote it (deploy/examples/...): what extra workers copy."""

    namespace: str
    env: str
    tenant: str
    team: str
    deployment: str
    selector: str
    service: str
    service_port: int
    image: str
    container_port: int
    plain_env: Mapping[str, str]
    secret_ref: str
    readiness_path: str | None
    pod_security_context: Mapping[str, Any]
    container_security_context: Mapping[str, Any]
    # The example's enableServiceLinks (None: not set), so that extra workers copy it too.
    service_links: bool | None = None


@dataclass(frozen=True)
class DeployPlan:
    webhook: WebhookPlan
    worker: WorkerPlan
    vault_ingress_policy: Mapping[str, Any]


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def _one(
    objects: Sequence[Mapping[str, Any]], kind: str, where: str, name: str | None = None
) -> Mapping[str, Any]:
    found = h.find_objects(objects, kind, name)
    if len(found) != 1:
        what = f"{kind}/{name}" if name else kind
        raise PlanError(f"{where}: expected exactly one {what}, found {len(found)}")
    return found[0]


def _first_container(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    spec = h.pod_spec_of(obj) or {}
    containers = spec.get("containers") or []
    if not containers:
        raise PlanError(f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')} has no container")
    first: Mapping[str, Any] = containers[0]
    return first


def webhook_plan(objects: Sequence[Mapping[str, Any]], layout: Layout) -> WebhookPlan:
    where = f"deploy/{layout.webhook_overlay}"
    deployment = _one(objects, "Deployment", where)
    meta = deployment.get("metadata") or {}
    configmaps = [
        cm
        for cm in h.find_objects(objects, "ConfigMap")
        if layout.webhook_config_key in (cm.get("data") or {})
    ]
    if len(configmaps) != 1:
        raise PlanError(
            f"{where}: expected one ConfigMap with key {layout.webhook_config_key}, found {len(configmaps)}"
        )
    config = parse_config(yaml.safe_load(configmaps[0]["data"][layout.webhook_config_key]))
    return WebhookPlan(
        namespace=str(meta.get("namespace")),
        deployment=str(meta.get("name")),
        selector=label_selector(deployment["spec"]["selector"]["matchLabels"]),
        image=str(_first_container(deployment, where).get("image")),
        config=config,
    )


def _readiness_path(container: Mapping[str, Any]) -> str | None:
    http_get = (container.get("readinessProbe") or {}).get("httpGet") or {}
    path = http_get.get("path")
    return str(path) if path else None


def _container_port(container: Mapping[str, Any], where: str) -> int:
    ports = container.get("ports") or []
    if not ports or not isinstance(ports[0].get("containerPort"), int):
        raise PlanError(f"{where}: the worker container declares no containerPort")
    return int(ports[0]["containerPort"])


def worker_plan(objects: Sequence[Mapping[str, Any]], layout: Layout) -> WorkerPlan:
    where = f"deploy/{layout.example_namespace}"
    namespace = _one(objects, "Namespace", where)
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    missing = [key for key in (c.LABEL_ENV, c.LABEL_TENANT) if key not in labels]
    if missing:
        raise PlanError(f"{where}: Namespace lacks the binding label(s) {', '.join(missing)}")
    workers = [
        d
        for d in h.find_objects(objects, "Deployment")
        if ((d["spec"]["template"].get("metadata") or {}).get("labels") or {}).get("greentic.ai/component")
        == c.COMPONENT_WORKER
    ]
    if len(workers) != 1:
        raise PlanError(f"{where}: expected one worker Deployment, found {len(workers)}")
    deployment = workers[0]
    container = _first_container(deployment, where)
    plain_env = {str(e["name"]): str(e.get("value", "")) for e in container.get("env") or [] if "value" in e}
    secret_ref = plain_env.get(layout.worker_secret_env, "")
    if not secret_ref.startswith("secret://"):
        raise PlanError(f"{where}: the worker's {layout.worker_secret_env} is not a secret:// reference")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [
        s
        for s in h.find_objects(objects, "Service")
        if (s.get("spec") or {}).get("selector")
        and all(template_labels.get(k) == v for k, v in s["spec"]["selector"].items())
    ]
    if len(services) != 1:
        raise PlanError(f"{where}: expected one Service selecting the worker, found {len(services)}")
    service = services[0]
    return WorkerPlan(
        namespace=str(namespace["metadata"]["name"]),
        env=str(labels[c.LABEL_ENV]),
        tenant=str(labels[c.LABEL_TENANT]),
        team=str(labels.get(c.LABEL_TEAM, c.DEFAULT_TEAM)),
        deployment=str(deployment["metadata"]["name"]),
        selector=label_selector(deployment["spec"]["selector"]["matchLabels"]),
        service=str(service["metadata"]["name"]),
        service_port=int(service["spec"]["ports"][0]["port"]),
        image=str(container.get("image")),
        container_port=_container_port(container, where),
        plain_env=plain_env,
        secret_ref=secret_ref,
        readiness_path=_readiness_path(container),
        pod_security_context=dict((h.pod_spec_of(deployment) or {}).get("securityContext") or {}),
        container_security_context=dict(container.get("securityContext") or {}),
        service_links=(h.pod_spec_of(deployment) or {}).get("enableServiceLinks"),
    )


def deploy_plan(
    *,
    vault: Sequence[Mapping[str, Any]],
    webhook: Sequence[Mapping[str, Any]],
    example: Sequence[Mapping[str, Any]],
    layout: Layout,
) -> DeployPlan:
    """Everything the fixtures and tests need from the three rendered kustomizations."""
    webhook_part = webhook_plan(webhook, layout)
    worker_part = worker_plan(example, layout)
    policy = _one(vault, "NetworkPolicy", f"deploy/{layout.vault_kustomization}", layout.vault_ingress_policy)
    # Our images come from `kind load`: a manifest that makes the kubelet pull them cannot work. Other
    # images (OpenBao) are pulled by the kind nodes themselves.
    ours = {webhook_part.image, worker_part.image}
    rendered = (
        (vault, layout.vault_kustomization),
        (webhook, layout.webhook_overlay),
        (example, layout.example_namespace),
    )
    for objects, where in rendered:
        for owner, image, pull_policy in h.images_in(objects):
            if image in ours and h.pulls_from_registry(image, pull_policy):
                raise PlanError(
                    f"deploy/{where}: {owner} would pull {image} from a registry; a kind-loaded image needs "
                    "imagePullPolicy IfNotPresent and a tag other than latest"
                )
    # The webhook's static bindings apply before namespace labels (README, "Configuration reference").
    static = webhook_part.config.namespaces.get(worker_part.namespace)
    if static is not None:
        worker_part = replace(worker_part, env=static.env, tenant=static.tenant, team=static.team)
    return DeployPlan(
        webhook=webhook_part,
        worker=worker_part,
        vault_ingress_policy=policy,
    )


def expected_worker_env(plan: DeployPlan) -> dict[str, str]:
    """The non-secret settings the webhook must inject into the example worker, from the deployed config."""
    config = plan.webhook.config
    worker = plan.worker
    environment = config.environments.get(worker.env)
    if environment is None or environment.vault is None:
        raise PlanError(f"the webhook config has no Vault environment {worker.env!r} for {worker.namespace}")
    vault = environment.vault
    env = {
        c.ENV_SECRETS_BACKEND: c.BACKEND_VAULT,
        c.ENV_VAULT_ADDR: vault.addr,
        c.ENV_VAULT_ROLE: vault.role.format(env=worker.env, tenant=worker.tenant, team=worker.team),
        c.ENV_VAULT_TOKEN_PATH: config.vault_token.path,
        c.ENV_GREENTIC_ENV: worker.env,
        c.ENV_GREENTIC_TENANT: worker.tenant,
        c.ENV_GREENTIC_TEAM: worker.team,
    }
    if vault.kv_mount != c.DEFAULT_KV_MOUNT:
        env[c.ENV_VAULT_KV_MOUNT] = vault.kv_mount
    if vault.kv_prefix != c.DEFAULT_KV_PREFIX:
        env[c.ENV_VAULT_KV_PREFIX] = vault.kv_prefix
    if vault.ca_config_map is not None:
        env[c.ENV_VAULT_CACERT] = f"{config.vault_token.directory}/{c.VAULT_CA_FILE}"
    return env


def worker_app(
    worker: WorkerPlan,
    name: str,
    *,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> h.App:
    """Another worker like the example one (same image, env, port, probe, security context), written as
    an unchanged deployer writes it; ``env`` and ``labels`` are added to the example's."""
    return h.App(
        name=name,
        namespace=worker.namespace,
        image=worker.image,
        labels={**h.WORKER_LABELS, **(labels or {})},
        env={**worker.plain_env, **(env or {})},
        port=worker.container_port,
        readiness_path=worker.readiness_path,
        pod_security=worker.pod_security_context or h.RESTRICTED_POD_SECURITY,
        container_security=worker.container_security_context or h.RESTRICTED_CONTAINER_SECURITY,
        service_links=worker.service_links,
    )
