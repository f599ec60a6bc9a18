"""Pure helpers of the kind end-to-end suite: no subprocess, no network, no clock of their own.

Everything the suite decides (is Docker there, what the kind config is, what a deployer's manifest looks
like, does a pod run on Vault, what Vault's audit log says about a worker, does a Secret hold a value) is
a function of its inputs here, so tests/unit/test_e2e_helpers.py checks it without Docker or kind. The I/O
(kubectl, docker, kind, port-forwards) lives in e2e/kube.py and the fixtures in e2e/conftest.py.

No function here ever puts a secret value into a message: the Secret scan returns names and keys, the
audit summary returns paths and operations.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from gtc_admission import constants as c
from gtc_admission.api_token import is_api_access_volume

T = TypeVar("T")

# kind >= 0.24 ships kindnet with kube-network-policies: NetworkPolicy is enforced by the default CNI.
# Older kinds ignore NetworkPolicy, and the Vault-ingress test would pass for the wrong reason or fail.
MIN_KIND_VERSION: Final = (0, 24, 0)

# The annotation value and label keys a deployer never writes but the webhook does.
WORKER_LABELS: Final = {"greentic.ai/component": c.COMPONENT_WORKER}
ROUTER_LABELS: Final = {"greentic.ai/component": c.COMPONENT_ROUTER}
# Set on every object the suite creates, so that a kept cluster shows which objects came from the suite.
SUITE_LABEL: Final = "e2e.greentic.ai/suite"

# The env vars the webhook injects into every worker container (VAULT_KV_* only when not the default).
INJECTED_ENV: Final = (
    c.ENV_SECRETS_BACKEND,
    c.ENV_VAULT_ADDR,
    c.ENV_VAULT_ROLE,
    c.ENV_VAULT_TOKEN_PATH,
    c.ENV_GREENTIC_ENV,
    c.ENV_GREENTIC_TENANT,
    c.ENV_GREENTIC_TEAM,
)

# Paths in Vault's audit log (defaults of bootstrap and the runtime).
K8S_LOGIN_PATH: Final = "auth/kubernetes/login"


# ---------------------------------------------------------------------------------------------
# Tools: why the suite cannot run here.
# ---------------------------------------------------------------------------------------------


def parse_kind_version(text: str) -> tuple[int, int, int] | None:
    """``kind version`` output (``kind v0.24.0 go1.22.6 linux/amd64``) -> (0, 24, 0); None if unreadable."""
    match = re.search(r"\bv?(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def first_line(text: str, limit: int = 200) -> str:
    """The first non-blank line of a tool's output, shortened: enough to say why, never a wall of text."""
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            return line if len(line) <= limit else line[:limit] + "..."
    return "(no output)"


@dataclass(frozen=True)
class ToolProbe:
    """What the fixtures found out about the tools, before anything is started.

    ``docker_info`` is (exit code, stderr) of ``docker info``, or None when no docker CLI is on PATH;
    ``kind_version`` is the output of ``kind version``, or None when kind is not on PATH.
    """

    docker_info: tuple[int, str] | None
    kind_version: str | None
    kubectl: bool


def skip_reason(probe: ToolProbe) -> str | None:
    """Why the suite must skip here, or None when it can run. Docker first: nothing works without it."""
    if probe.docker_info is None:
        return "no Docker engine: the docker command is not installed"
    code, stderr = probe.docker_info
    if code != 0:
        return f"no Docker engine: `docker info` failed: {first_line(stderr)}"
    if probe.kind_version is None:
        return "kind not installed"
    version = parse_kind_version(probe.kind_version)
    if version is None:
        return f"kind version unreadable: {first_line(probe.kind_version)}"
    if version < MIN_KIND_VERSION:
        wanted = ".".join(str(p) for p in MIN_KIND_VERSION)
        have = ".".join(str(p) for p in version)
        return f"kind {have} is older than {wanted}: its default CNI does not enforce NetworkPolicy"
    if not probe.kubectl:
        return "kubectl not installed"
    return None


# ---------------------------------------------------------------------------------------------
# The kind cluster.
# ---------------------------------------------------------------------------------------------


def kind_config(*, workers: int) -> dict[str, Any]:
    """A kind cluster config: one control plane and ``workers`` worker nodes, the default CNI (kindnet).

    kindnet enforces NetworkPolicy from kind 0.24 on (checked by ``skip_reason``), so no other CNI is
    installed and nothing is fetched from outside the kind node images. Worker nodes let the webhook's two
    replicas land on different nodes, as its anti-affinity asks.
    """
    nodes: list[dict[str, Any]] = [{"role": "control-plane"}]
    nodes.extend({"role": "worker"} for _ in range(workers))
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "nodes": nodes}


# ---------------------------------------------------------------------------------------------
# Polling with a deadline.
# ---------------------------------------------------------------------------------------------


class PollTimeout(AssertionError):
    """A condition was not reached before its deadline; the message says what and what was seen last."""


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 1.0,
    describe: Callable[[], str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe`` until it returns something other than None (returned), or fail at the deadline.

    ``probe`` is called at least once, even with ``timeout=0``. A pause never goes past the deadline.
    ``describe`` (called only on failure) adds what the cluster looked like, e.g. a pod's status.
    """
    deadline = clock() + timeout
    attempts = 0
    while True:
        attempts += 1
        result = probe()
        if result is not None:
            return result
        remaining = deadline - clock()
        if remaining <= 0:
            seen = f"; last seen: {describe()}" if describe is not None else ""
            raise PollTimeout(f"{what}: not reached within {timeout:g}s ({attempts} attempt(s)){seen}")
        sleep(min(interval, remaining))


# ---------------------------------------------------------------------------------------------
# Output of tools.
# ---------------------------------------------------------------------------------------------

_FORWARDING_RE = re.compile(r"^Forwarding from (?:127\.0\.0\.1|\[::1\]):(\d+) -> (\d+)\s*$")


def parse_port_forward(line: str) -> int | None:
    """The local port of ``kubectl port-forward``'s "Forwarding from 127.0.0.1:41234 -> 8200" line."""
    match = _FORWARDING_RE.match(line.strip())
    return int(match.group(1)) if match else None


def load_documents(text: str) -> list[dict[str, Any]]:
    """The objects of rendered YAML (``kubectl kustomize``), empty documents and Lists flattened."""
    import yaml

    objects: list[dict[str, Any]] = []
    for document in yaml.safe_load_all(text):
        if not isinstance(document, dict):
            continue
        if document.get("kind", "").endswith("List") and isinstance(document.get("items"), list):
            objects.extend(item for item in document["items"] if isinstance(item, dict))
        else:
            objects.append(document)
    return objects


def pod_spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a Pod or of a workload's template (CronJob: its job template's), else None."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    if isinstance(template, Mapping):
        inner = template.get("spec")
        return inner if isinstance(inner, Mapping) else None
    return None


def images_in(objects: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(object kind/name, image, imagePullPolicy or "") of every container of rendered manifests."""
    found: list[tuple[str, str, str]] = []
    for obj in objects:
        spec = pod_spec_of(obj)
        if spec is None:
            continue
        owner = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                found.append(
                    (owner, str(container.get("image", "")), str(container.get("imagePullPolicy", "")))
                )
    return found


def pulls_from_registry(image: str, pull_policy: str) -> bool:
    """Would the kubelet try a registry for an image that ``kind load`` already put on the nodes?

    ``Always`` does, and so does the default for ``:latest`` or an untagged image (Kubernetes defaults the
    policy to Always for those). Such an image cannot come from ``kind load``.
    """
    if pull_policy == "Always":
        return True
    if pull_policy in ("IfNotPresent", "Never"):
        return False
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    return "@" not in image and tag in ("", "latest")


def find_objects(
    objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None
) -> list[Mapping[str, Any]]:
    """Rendered objects of ``kind`` (and ``name``)."""
    return [
        obj
        for obj in objects
        if obj.get("kind") == kind and (name is None or (obj.get("metadata") or {}).get("name") == name)
    ]


def kube_ca_from_configmap(configmap: Mapping[str, Any]) -> str:
    """The cluster CA (PEM) from the ``kube-root-ca.crt`` ConfigMap every namespace gets."""
    pem = (configmap.get("data") or {}).get("ca.crt")
    if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
        raise ValueError("ConfigMap kube-root-ca.crt has no PEM ca.crt")
    return pem


# ---------------------------------------------------------------------------------------------
# Manifests an unchanged deployer applies: plain objects, no ServiceAccount, no Vault settings.
# ---------------------------------------------------------------------------------------------


def env_list(env: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": key, "value": value} for key, value in env.items()]


# The restricted Pod Security Standard, which worker namespaces enforce: a deployer's pod must say this
# much anyway, and none of it concerns Vault.
RESTRICTED_POD_SECURITY: Final[Mapping[str, Any]] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: Final[Mapping[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class App:
    """One container app as a deployer writes it: name, image, labels, plain env, an optional port."""

    name: str
    namespace: str
    image: str
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    command: Sequence[str] | None = None
    readiness_path: str | None = None
    pod_security: Mapping[str, Any] = field(default_factory=lambda: dict(RESTRICTED_POD_SECURITY))
    container_security: Mapping[str, Any] = field(default_factory=lambda: dict(RESTRICTED_CONTAINER_SECURITY))
    # The pod's enableServiceLinks; None leaves the cluster's default (on).
    service_links: bool | None = None


def container_of(app: App) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": app.name,
        "image": app.image,
        # The suite's images come from `kind load`, never from a registry.
        "imagePullPolicy": "IfNotPresent",
        "securityContext": json.loads(json.dumps(app.container_security)),
    }
    if app.command is not None:
        container["command"] = list(app.command)
    if app.env:
        container["env"] = env_list(app.env)
    if app.port is not None:
        container["ports"] = [{"name": "http", "containerPort": app.port}]
        if app.readiness_path is not None:
            container["readinessProbe"] = {
                "httpGet": {"path": app.readiness_path, "port": app.port},
                "periodSeconds": 2,
            }
    return container


def _pod_labels(app: App) -> dict[str, str]:
    return {SUITE_LABEL: "true", "app": app.name, **app.labels}


def _pod_spec(app: App, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "securityContext": json.loads(json.dumps(app.pod_security)),
        "containers": [container_of(app)],
    }
    if app.service_links is not None:
        spec["enableServiceLinks"] = app.service_links
    return {**spec, **(extra or {})}


def deployment_manifest(
    app: App, *, replicas: int = 1, pod_spec_extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A plain Deployment: what a deployer that knows nothing about Vault applies (no serviceAccountName)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app.name, "namespace": app.namespace, "labels": {SUITE_LABEL: "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app.name}},
            "template": {
                "metadata": {"labels": _pod_labels(app)},
                "spec": _pod_spec(app, pod_spec_extra),
            },
        },
    }


def pod_manifest(app: App, *, pod_spec_extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A bare Pod of ``app`` (no controller), e.g. to create many workers quickly."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": app.name, "namespace": app.namespace, "labels": _pod_labels(app)},
        "spec": _pod_spec(app, {"restartPolicy": "Never", **(pod_spec_extra or {})}),
    }


def dev_secret_reference(secret_name: str) -> dict[str, Any]:
    """Pod-spec pieces that reference ``secret_name`` the old way: envFrom and a volume.

    Used to build what the webhook must refuse; the Secret itself never exists (nothing is read from it).
    """
    return {
        "envFrom": [{"secretRef": {"name": secret_name}}],
        "volume": {"name": "dev-secrets", "secret": {"secretName": secret_name}},
    }


def with_dev_secret(manifest: Mapping[str, Any], secret_name: str) -> dict[str, Any]:
    """A copy of a Pod or Deployment manifest whose first container reads ``secret_name`` (envFrom)
    and whose pod mounts it as a volume: the two commonest ways the old deployers used it."""
    copy: dict[str, Any] = json.loads(json.dumps(manifest))
    spec = copy["spec"] if copy["kind"] == "Pod" else copy["spec"]["template"]["spec"]
    ref = dev_secret_reference(secret_name)
    spec["containers"][0]["envFrom"] = ref["envFrom"]
    spec.setdefault("volumes", []).append(ref["volume"])
    return copy


def refused_with_rule(stderr: str, rule: str) -> bool:
    """Did ``kubectl apply`` fail because an admission webhook denied with ``rule``?

    kubectl prints the API server's error: `admission webhook "..." denied the request: [rule] ...`.
    """
    return "denied the request" in stderr and f"[{rule}]" in stderr


# ---------------------------------------------------------------------------------------------
# Pods as the cluster reports them.
# ---------------------------------------------------------------------------------------------


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """Literal env values of one container (valueFrom entries map to "")."""
    return {str(e.get("name")): str(e.get("value", "")) for e in container.get("env") or []}


def service_account_of(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or c.DEFAULT_SERVICE_ACCOUNT)


def worker_problems(pod: Mapping[str, Any], expected: Mapping[str, str], badge: str) -> list[str]:
    """What is missing for ``pod`` to be a worker on Vault: the badge, the marker, ``expected`` env in
    every container. Empty when it is right. Names and values here are the non-secret settings only."""
    problems: list[str] = []
    account = service_account_of(pod)
    if account != badge:
        problems.append(f"runs as ServiceAccount {account}, not {badge}")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(c.ANNOTATION_SECRETS_BACKEND) != c.BACKEND_VAULT:
        problems.append(f"no annotation {c.ANNOTATION_SECRETS_BACKEND}: {c.BACKEND_VAULT}")
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            env = container_env(container)
            for name, value in expected.items():
                if env.get(name) != value:
                    problems.append(
                        f"container {container.get('name')}: {name}={env.get(name)!r}, want {value!r}"
                    )
    token_volumes = [
        v
        for v in spec.get("volumes") or []
        if any("serviceAccountToken" in s for s in (v.get("projected") or {}).get("sources") or [])
    ]
    if not token_volumes:
        problems.append("no projected serviceAccountToken volume")
    # The ServiceAccount plugin's API token (added while the pod was on "default") must be gone.
    for volume in spec.get("volumes") or []:
        if is_api_access_volume(volume):
            problems.append(f"carries the Kubernetes API token volume {volume.get('name')}")
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            for mount in container.get("volumeMounts") or []:
                if mount.get("mountPath") == c.API_ACCESS_MOUNT_PATH:
                    problems.append(f"container {container.get('name')}: mounts {c.API_ACCESS_MOUNT_PATH}")
    return problems


def router_problems(pod: Mapping[str, Any], original: Mapping[str, str]) -> list[str]:
    """What the webhook changed on a router pod: it must run as ``default`` with only ``original`` env."""
    problems: list[str] = []
    account = service_account_of(pod)
    if account != c.DEFAULT_SERVICE_ACCOUNT:
        problems.append(f"runs as ServiceAccount {account}, not {c.DEFAULT_SERVICE_ACCOUNT}")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if c.ANNOTATION_SECRETS_BACKEND in annotations:
        problems.append(f"has annotation {c.ANNOTATION_SECRETS_BACKEND}")
    for container in (pod.get("spec") or {}).get("containers") or []:
        env = container_env(container)
        if env != dict(original):
            added = sorted(set(env) - set(original))
            problems.append(f"container {container.get('name')}: env changed (added {added})")
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == c.VAULT_TOKEN_VOLUME:
            problems.append(f"has volume {c.VAULT_TOKEN_VOLUME}")
    return problems


def unpatched_workers(pods: Mapping[str, Any], badge: str) -> list[str]:
    """Names (with their ServiceAccount) of pods in a ``kubectl get pods -o json`` list that do not run
    as ``badge`` or lack the Vault marker: a worker the webhook never saw."""
    found: list[str] = []
    for pod in pods.get("items") or []:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        account = service_account_of(pod)
        if account != badge or annotations.get(c.ANNOTATION_SECRETS_BACKEND) != c.BACKEND_VAULT:
            found.append(f"{(pod.get('metadata') or {}).get('name')} (ServiceAccount {account})")
    return found


def terminated_exit_codes(pod: Mapping[str, Any]) -> list[int]:
    """Exit codes of containers that have terminated (now or in their last state)."""
    codes: list[int] = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for state_key in ("state", "lastState"):
            terminated = (status.get(state_key) or {}).get("terminated")
            if terminated and isinstance(terminated.get("exitCode"), int):
                codes.append(int(terminated["exitCode"]))
    return codes


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(cond.get("type") == "Ready" and cond.get("status") == "True" for cond in conditions)


def pod_summary(pod: Mapping[str, Any]) -> str:
    """One line about a pod for a failure message: phase, readiness, container states (no env)."""
    status = pod.get("status") or {}
    parts = [
        f"{(pod.get('metadata') or {}).get('name')}: phase={status.get('phase')}",
        f"ready={pod_ready(pod)}",
    ]
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        which = next(iter(state), "unknown")
        reason = (state.get(which) or {}).get("reason", "")
        parts.append(
            f"{cs.get('name')}={which}{'/' + reason if reason else ''} restarts={cs.get('restartCount')}"
        )
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Secrets: what listing them reveals.
# ---------------------------------------------------------------------------------------------


def secret_ids(secrets: Mapping[str, Any], name: str) -> list[str]:
    """``namespace/name`` of every Secret in a ``kubectl get secrets -A -o json`` list called ``name``."""
    return [
        f"{(s.get('metadata') or {}).get('namespace')}/{(s.get('metadata') or {}).get('name')}"
        for s in secrets.get("items") or []
        if (s.get("metadata") or {}).get("name") == name
    ]


def secrets_holding(secrets: Mapping[str, Any], value: str) -> list[str]:
    """``namespace/name:key`` of every Secret entry whose decoded data contains ``value`` (as bytes).

    Every ``data`` entry is base64-decoded and searched (a value inside a JSON file counts too);
    ``stringData`` is searched as it is, in case a client sent it through. Only locations are returned,
    never content, so a failure message cannot leak the value.
    """
    needle = value.encode()
    found: list[str] = []
    for secret in secrets.get("items") or []:
        meta = secret.get("metadata") or {}
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        for key, encoded in (secret.get("data") or {}).items():
            try:
                decoded = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError):
                decoded = str(encoded).encode()
            if needle in decoded:
                found.append(f"{where}:{key}")
        for key, text in (secret.get("stringData") or {}).items():
            if needle in str(text).encode():
                found.append(f"{where}:{key}")
    return found


# ---------------------------------------------------------------------------------------------
# Vault's file audit device.
# ---------------------------------------------------------------------------------------------


def parse_audit_lines(text: str) -> list[dict[str, Any]]:
    """One dict per JSON object line of a Vault file audit device. Other lines (a container log can mix
    in the server's own log lines when the device writes to stdout) are skipped."""
    entries: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("type") in ("request", "response"):
            entries.append(entry)
    return entries


@dataclass(frozen=True)
class WorkerTrail:
    """What Vault's audit log shows for one worker identity: successful logins, KV reads, transit decrypts.

    Each is a list of request paths. Only entries whose ``auth.metadata`` names the identity count (for the
    login, the *response* that issued the token: the request entry carries no identity yet), and only
    responses without an error (a refused request is in the log too, and is not a read).
    """

    logins: list[str]
    kv_reads: list[str]
    decrypts: list[str]


def _identity_matches(entry: Mapping[str, Any], namespace: str, service_account: str) -> bool:
    metadata = (entry.get("auth") or {}).get("metadata") or {}
    return bool(
        metadata.get("service_account_namespace") == namespace
        and metadata.get("service_account_name") == service_account
    )


def worker_trail(
    entries: Iterable[Mapping[str, Any]],
    *,
    namespace: str,
    service_account: str,
    role: str,
    kv_mount: str = c.DEFAULT_KV_MOUNT,
    transit_key: str,
    transit_mount: str = "transit",
    login_path: str = K8S_LOGIN_PATH,
) -> WorkerTrail:
    """Summarise the audit entries of ``service_account`` in ``namespace`` (see :class:`WorkerTrail`)."""
    logins: list[str] = []
    kv_reads: list[str] = []
    decrypts: list[str] = []
    for entry in entries:
        if entry.get("type") != "response" or entry.get("error"):
            continue
        if not _identity_matches(entry, namespace, service_account):
            continue
        request = entry.get("request") or {}
        path = str(request.get("path", ""))
        operation = request.get("operation")
        if path == login_path and operation == "update":
            metadata = (entry.get("auth") or {}).get("metadata") or {}
            if metadata.get("role") == role:
                logins.append(path)
        elif path.startswith(f"{kv_mount}/data/") and operation == "read":
            kv_reads.append(path)
        elif path == f"{transit_mount}/decrypt/{transit_key}" and operation == "update":
            decrypts.append(path)
    return WorkerTrail(logins=logins, kv_reads=kv_reads, decrypts=decrypts)


_ROOT_TOKEN_RE = re.compile(r"^Root Token: (\S+)[ \t]*$", re.MULTILINE)


def root_token_from_log(text: str) -> str | None:
    """The root token a dev-mode Vault/OpenBao prints at start (``Root Token: ...``), or None yet."""
    match = _ROOT_TOKEN_RE.search(text)
    return match.group(1) if match else None
