"""The pure helpers of the kind suite (e2e/helpers.py), without Docker, kind or a cluster."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from e2e import helpers as h
from e2e import kube, layout, plan, stack

from gtc_admission import constants as c
from gtc_admission.config import parse_config
from gtc_admission.offline import review_text
from tests.unit.conftest import API_ACCESS_VOLUME, as_admitted

CANARY = "CANARY-e2e-7c1d-never-shown"
BADGE = "gtc-worker"


# ---------------------------------------------------------------------------------------------
# Tools and skip reasons.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind v0.24.0 go1.22.6 linux/amd64", (0, 24, 0)),
        ("kind v0.23.0 go1.21.10 darwin/arm64", (0, 23, 0)),
        ("kind v1.0.0-alpha go1.23 linux/amd64", (1, 0, 0)),
        ("0.27.1", (0, 27, 1)),
        ("kind version unknown", None),
        ("", None),
    ],
)
def test_parse_kind_version(text: str, expected: tuple[int, int, int] | None) -> None:
    """kind's version line is read into a comparable tuple; nonsense is None."""
    assert h.parse_kind_version(text) == expected


DOCKER_OK = (0, "")
DOCKER_DOWN = (
    1,
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
)
KIND_OK = "kind v0.25.0 go1.22.9 linux/amd64\n"


@pytest.mark.parametrize(
    ("probe", "reason"),
    [
        (
            h.ToolProbe(docker_info=None, kind_version=KIND_OK, kubectl=True),
            "no Docker engine: the docker command",
        ),
        (
            h.ToolProbe(docker_info=DOCKER_DOWN, kind_version=KIND_OK, kubectl=True),
            "no Docker engine: `docker info` failed: Cannot connect to the Docker daemon",
        ),
        # Docker is checked first: with neither, the reason is Docker's.
        (h.ToolProbe(docker_info=DOCKER_DOWN, kind_version=None, kubectl=False), "no Docker engine"),
        (h.ToolProbe(docker_info=DOCKER_OK, kind_version=None, kubectl=True), "kind not installed"),
        (
            h.ToolProbe(docker_info=DOCKER_OK, kind_version="kind v0.23.0 go1.21 linux/amd64", kubectl=True),
            "kind 0.23.0 is older than 0.24.0: its default CNI does not enforce NetworkPolicy",
        ),
        (h.ToolProbe(docker_info=DOCKER_OK, kind_version="???", kubectl=True), "kind version unreadable"),
        (h.ToolProbe(docker_info=DOCKER_OK, kind_version=KIND_OK, kubectl=False), "kubectl not installed"),
    ],
)
def test_skip_reason_names_what_is_missing(probe: h.ToolProbe, reason: str) -> None:
    """Each missing tool gives its own reason, starting with the words the brief asks for."""
    found = h.skip_reason(probe)
    assert found is not None
    assert found.startswith(reason)


def test_skip_reason_none_when_everything_is_there() -> None:
    """Docker answering, kind >= 0.24 and kubectl: the suite runs."""
    assert h.skip_reason(h.ToolProbe(docker_info=DOCKER_OK, kind_version=KIND_OK, kubectl=True)) is None
    assert (
        h.skip_reason(h.ToolProbe(docker_info=DOCKER_OK, kind_version="kind v0.24.0", kubectl=True)) is None
    )


def test_first_line_is_short_and_skips_blank_lines() -> None:
    """Only the first meaningful line of a tool's complaint ends up in the skip reason."""
    assert h.first_line("\n\n  error one  \nerror two") == "error one"
    assert h.first_line("") == "(no output)"
    assert h.first_line("x" * 500, limit=10) == "x" * 10 + "..."


def test_kind_config_uses_the_default_cni() -> None:
    """One control plane plus workers; the default CNI is kept (kindnet enforces NetworkPolicy)."""
    config = h.kind_config(workers=2)
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert "networking" not in config  # disableDefaultCNI would switch NetworkPolicy enforcement off


# ---------------------------------------------------------------------------------------------
# Polling.
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_poll_returns_the_first_value_that_is_not_none() -> None:
    """The probe is asked until it answers; pauses are the interval."""
    fake = FakeClock()
    answers = iter([None, None, "ready"])
    got = h.poll(
        lambda: next(answers), timeout=10, what="x", interval=1.0, clock=fake.clock, sleep=fake.sleep
    )
    assert got == "ready"
    assert fake.sleeps == [1.0, 1.0]


def test_poll_falsy_values_other_than_none_count_as_answers() -> None:
    """0, "" and False are answers (a count of zero is a result), only None means "not yet"."""
    fake = FakeClock()
    assert h.poll(lambda: 0, timeout=1, what="x", clock=fake.clock, sleep=fake.sleep) == 0
    assert h.poll(lambda: False, timeout=1, what="x", clock=fake.clock, sleep=fake.sleep) is False


def test_poll_fails_at_the_deadline_saying_what_and_what_was_seen() -> None:
    """At the deadline: PollTimeout with the goal, the attempts and the description; no pause past it."""
    fake = FakeClock()
    with pytest.raises(h.PollTimeout) as info:
        h.poll(
            lambda: None,
            timeout=2.5,
            what="worker ready",
            interval=1.0,
            describe=lambda: "phase=Pending",
            clock=fake.clock,
            sleep=fake.sleep,
        )
    message = str(info.value)
    assert "worker ready: not reached within 2.5s (4 attempt(s))" in message
    assert "last seen: phase=Pending" in message
    assert fake.sleeps == [1.0, 1.0, 0.5]
    assert fake.now == pytest.approx(102.5)


def test_poll_asks_once_even_with_no_time() -> None:
    """timeout=0 still probes once (a condition already true is not a failure)."""
    fake = FakeClock()
    assert h.poll(lambda: "now", timeout=0, what="x", clock=fake.clock, sleep=fake.sleep) == "now"
    with pytest.raises(h.PollTimeout, match=r"\(1 attempt\(s\)\)"):
        h.poll(lambda: None, timeout=0, what="x", clock=fake.clock, sleep=fake.sleep)
    assert fake.sleeps == []


# ---------------------------------------------------------------------------------------------
# Tool output.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("Forwarding from 127.0.0.1:41234 -> 8200", 41234),
        ("Forwarding from 127.0.0.1:41234 -> 8200\n", 41234),
        ("Forwarding from [::1]:5000 -> 8080", 5000),
        ("Handling connection for 41234", None),
        ("error: unable to forward port", None),
        ("", None),
    ],
)
def test_parse_port_forward(line: str, port: int | None) -> None:
    """The local port comes from kubectl's "Forwarding from" line and nothing else."""
    assert h.parse_port_forward(line) == port


RENDERED = """\
apiVersion: v1
kind: Namespace
metadata: {name: gtc-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gtc-admission, namespace: gtc-system}
spec:
  template:
    spec:
      initContainers: [{name: init, image: "busybox:1.36"}]
      containers: [{name: webhook, image: "gtc-admission:dev", imagePullPolicy: IfNotPresent}]
---
---
apiVersion: v1
kind: List
items:
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: rotate}
  spec:
    jobTemplate:
      spec:
        template:
          spec:
            containers: [{name: c, image: "tool:latest"}]
"""


def test_load_documents_flattens_lists_and_skips_empty_documents() -> None:
    """Rendered YAML becomes a flat list of objects."""
    objects = h.load_documents(RENDERED)
    assert [o["kind"] for o in objects] == ["Namespace", "Deployment", "CronJob"]


def test_images_in_finds_every_container_of_every_workload() -> None:
    """Init containers, containers, and a CronJob's job template are all found, with their pull policy."""
    assert h.images_in(h.load_documents(RENDERED)) == [
        ("Deployment/gtc-admission", "busybox:1.36", ""),
        ("Deployment/gtc-admission", "gtc-admission:dev", "IfNotPresent"),
        ("CronJob/rotate", "tool:latest", ""),
    ]


@pytest.mark.parametrize(
    ("image", "policy", "pulls"),
    [
        ("gtc-admission:dev", "", False),
        ("gtc-admission:dev", "IfNotPresent", False),
        ("gtc-admission:dev", "Always", True),
        ("gtc-admission", "", True),  # untagged = latest: Kubernetes defaults to Always
        ("gtc-admission:latest", "", True),
        ("gtc-admission:latest", "IfNotPresent", False),
        ("registry.local:5000/gtc-admission", "", True),  # the colon is the registry's port, not a tag
        ("registry.local:5000/gtc-admission:1.0", "", False),
        ("gtc@sha256:" + "0" * 64, "", False),
    ],
)
def test_pulls_from_registry(image: str, policy: str, pulls: bool) -> None:
    """An image `kind load` put on the nodes must not be pulled again (Always, or :latest by default)."""
    assert h.pulls_from_registry(image, policy) is pulls


def test_find_objects_by_kind_and_name() -> None:
    objects = h.load_documents(RENDERED)
    assert len(h.find_objects(objects, "Deployment")) == 1
    assert h.find_objects(objects, "Deployment", "gtc-admission")[0]["metadata"]["namespace"] == "gtc-system"
    assert h.find_objects(objects, "Deployment", "other") == []


def test_kube_ca_from_configmap() -> None:
    """The cluster CA comes from kube-root-ca.crt; a ConfigMap without a PEM is an error."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert h.kube_ca_from_configmap({"data": {"ca.crt": pem}}) == pem
    with pytest.raises(ValueError, match=r"kube-root-ca\.crt"):
        h.kube_ca_from_configmap({"data": {}})


# ---------------------------------------------------------------------------------------------
# Deployer manifests.
# ---------------------------------------------------------------------------------------------

WORKER = h.App(
    name="demo-worker",
    namespace="acme-prod",
    image="gtc-demo-worker:e2e",
    labels=h.WORKER_LABELS,
    env={"WEBHOOK_SECRET": "secret://webhook/inbound"},
    port=8080,
    readiness_path="/healthz",
)


def test_deployment_is_what_an_unchanged_deployer_writes() -> None:
    """No ServiceAccount, no Vault settings, no token volume: only the app, its labels and its env."""
    manifest = h.deployment_manifest(WORKER, replicas=2)
    assert manifest["kind"] == "Deployment"
    assert manifest["spec"]["replicas"] == 2
    template = manifest["spec"]["template"]
    assert template["metadata"]["labels"]["greentic.ai/component"] == "worker"
    assert manifest["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    spec = template["spec"]
    assert "serviceAccountName" not in spec
    assert "serviceAccount" not in spec
    assert "volumes" not in spec
    (container,) = spec["containers"]
    assert container["env"] == [{"name": "WEBHOOK_SECRET", "value": "secret://webhook/inbound"}]
    assert not any(e["name"].startswith("VAULT_") for e in container["env"])
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}


def test_pod_manifest() -> None:
    """A bare pod of the app (never restarted), with the app's labels and nothing about Vault."""
    pod = h.pod_manifest(WORKER)
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["labels"]["greentic.ai/component"] == "worker"
    assert pod["metadata"]["labels"]["app"] == "demo-worker"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod["spec"]


def test_router_has_no_env_unless_given() -> None:
    router = h.App(
        name="router", namespace="acme-prod", image="img:1", labels=h.ROUTER_LABELS, command=["sleep", "1d"]
    )
    container = h.deployment_manifest(router)["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container
    assert "ports" not in container
    assert container["command"] == ["sleep", "1d"]


@pytest.mark.parametrize("build", [h.pod_manifest, h.deployment_manifest])
def test_with_dev_secret_references_it_by_envfrom_and_volume(build: Any) -> None:
    """The copy reads gtc-dev-secrets the old ways; the original is untouched."""
    original = build(WORKER)
    before = json.dumps(original, sort_keys=True)
    copy = h.with_dev_secret(original, "gtc-dev-secrets")
    assert json.dumps(original, sort_keys=True) == before
    spec = copy["spec"] if copy["kind"] == "Pod" else copy["spec"]["template"]["spec"]
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "gtc-dev-secrets"}}]
    assert {"name": "dev-secrets", "secret": {"secretName": "gtc-dev-secrets"}} in spec["volumes"]


@pytest.mark.parametrize(
    ("stderr", "refused"),
    [
        (
            'Error from server (Forbidden): error when creating "STDIN": admission webhook '
            '"validate.gtc-admission.greentic.ai" denied the request: [dev-secret-reference] pod references '
            "forbidden Secret gtc-dev-secrets at spec.containers[0].envFrom[0].secretRef.name",
            True,
        ),
        ('admission webhook "x" denied the request: [worker-service-account] ...', False),
        ("Internal error occurred: failed calling webhook: connection refused [dev-secret-reference]", False),
        ("", False),
    ],
)
def test_refused_with_rule(stderr: str, refused: bool) -> None:
    """Only a webhook denial carrying the rule id counts (a webhook that is down does not)."""
    assert h.refused_with_rule(stderr, c.RULE_DEV_SECRET_REFERENCE) is refused


# ---------------------------------------------------------------------------------------------
# Pods as the API server returns them.
# ---------------------------------------------------------------------------------------------

EXPECTED_ENV = {
    "GREENTIC_SECRETS_BACKEND": "vault",
    "VAULT_ADDR": "https://vault.vault.svc:8200",
    "VAULT_K8S_ROLE": "gtc-prod-acme",
    "GREENTIC_TENANT": "acme",
}


def patched_pod(
    name: str = "w-1", *, account: str = BADGE, env: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {c.ANNOTATION_SECRETS_BACKEND: c.BACKEND_VAULT}},
        "spec": {
            "serviceAccountName": account,
            "containers": [{"name": "app", "env": h.env_list(env if env is not None else EXPECTED_ENV)}],
            "volumes": [
                {
                    "name": "kube-api-access-x",
                    "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]},
                },
                {
                    "name": c.VAULT_TOKEN_VOLUME,
                    "projected": {
                        "sources": [{"serviceAccountToken": {"audience": "vault", "path": "token"}}]
                    },
                },
            ],
        },
    }


def unpatched_pod(name: str = "r-1", env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": "default",
            "containers": [{"name": "app", "env": h.env_list(env or {})}],
            "volumes": [
                {
                    "name": "kube-api-access-x",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                }
            ],
        },
    }


def test_worker_problems_none_for_a_patched_pod() -> None:
    assert h.worker_problems(patched_pod(), EXPECTED_ENV, BADGE) == []


def test_worker_problems_name_every_gap() -> None:
    """Wrong badge, a missing marker, a missing or different setting: each one is named."""
    pod = patched_pod(account="default", env={**EXPECTED_ENV, "VAULT_ADDR": "https://evil:8200"})
    del pod["metadata"]["annotations"]
    del pod["spec"]["volumes"][1]
    del pod["spec"]["containers"][0]["env"][0]
    problems = h.worker_problems(pod, EXPECTED_ENV, BADGE)
    assert problems == [
        "runs as ServiceAccount default, not gtc-worker",
        "no annotation greentic.ai/secrets-backend: vault",
        "container app: GREENTIC_SECRETS_BACKEND=None, want 'vault'",
        "container app: VAULT_ADDR='https://evil:8200', want 'https://vault.vault.svc:8200'",
        "no projected serviceAccountToken volume",
    ]


def test_worker_problems_name_the_api_token_left_by_the_service_account_plugin() -> None:
    """A worker that still carries the plugin's kube-api-access volume and its mount is not on Vault."""
    pod = as_admitted(patched_pod())
    assert h.worker_problems(pod, EXPECTED_ENV, BADGE) == [
        f"carries the Kubernetes API token volume {API_ACCESS_VOLUME}",
        f"container app: mounts {c.API_ACCESS_MOUNT_PATH}",
    ]


def test_router_problems_none_for_an_unchanged_router() -> None:
    """The default ServiceAccount's own token volume is not the webhook's doing."""
    assert h.router_problems(unpatched_pod(env={"MODE": "router"}), {"MODE": "router"}) == []


def test_router_problems_name_what_the_webhook_added() -> None:
    pod = patched_pod(env={"MODE": "router", "VAULT_ADDR": "x"})
    problems = h.router_problems(pod, {"MODE": "router"})
    assert problems == [
        "runs as ServiceAccount gtc-worker, not default",
        "has annotation greentic.ai/secrets-backend",
        "container app: env changed (added ['VAULT_ADDR'])",
        f"has volume {c.VAULT_TOKEN_VOLUME}",
    ]


def test_service_account_of_reads_the_deprecated_alias_and_defaults() -> None:
    assert h.service_account_of({"spec": {"serviceAccount": "legacy"}}) == "legacy"
    assert h.service_account_of({"spec": {}}) == "default"


def test_unpatched_workers_lists_only_the_ones_off_vault() -> None:
    """A pod on default, or on the badge without the marker, is unpatched; a patched pod is not."""
    no_marker = patched_pod("w-3")
    no_marker["metadata"]["annotations"] = {}
    pods = {"items": [patched_pod("w-1"), unpatched_pod("w-2"), no_marker]}
    assert h.unpatched_workers(pods, BADGE) == [
        "w-2 (ServiceAccount default)",
        "w-3 (ServiceAccount gtc-worker)",
    ]
    assert h.unpatched_workers({"items": []}, BADGE) == []


POD_STATUS: dict[str, Any] = {
    "metadata": {"name": "w-9"},
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "app",
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 4, "reason": "Error"}},
            }
        ],
    },
}


def test_exit_codes_readiness_and_summary_of_a_crashing_pod() -> None:
    assert h.terminated_exit_codes(POD_STATUS) == [4]
    assert h.pod_ready(POD_STATUS) is False
    assert (
        h.pod_summary(POD_STATUS) == "w-9: phase=Running ready=False app=waiting/CrashLoopBackOff restarts=2"
    )
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert h.pod_ready(ready) is True
    assert h.terminated_exit_codes(ready) == []


# ---------------------------------------------------------------------------------------------
# Secrets.
# ---------------------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SECRETS: dict[str, Any] = {
    "items": [
        {
            "metadata": {"namespace": "acme-prod", "name": "tls"},
            "data": {"tls.crt": b64("-----BEGIN..."), "x": b64("y")},
        },
        {"metadata": {"namespace": "old", "name": "gtc-dev-secrets"}, "data": {"a": b64("nothing")}},
        {"metadata": {"namespace": "acme-prod", "name": "copy"}, "data": {"WEBHOOK_SECRET": b64(CANARY)}},
        {
            "metadata": {"namespace": "acme-prod", "name": "dev-file"},
            "data": {".dev.secrets": b64(json.dumps({"prod/acme/core/webhook/inbound": CANARY}))},
        },
        {"metadata": {"namespace": "acme-prod", "name": "not-b64"}, "data": {"raw": "%%" + CANARY}},
        {"metadata": {"namespace": "acme-prod", "name": "empty"}},
    ]
}


def test_secret_ids_by_exact_name() -> None:
    assert h.secret_ids(SECRETS, "gtc-dev-secrets") == ["old/gtc-dev-secrets"]
    assert h.secret_ids(SECRETS, "gtc-dev-secret") == []


def test_secrets_holding_decodes_every_entry_and_returns_locations_only() -> None:
    """The value is found as a whole entry, inside a JSON file, and in a malformed entry; the answer
    names Secrets and keys, never the value."""
    found = h.secrets_holding(SECRETS, CANARY)
    assert found == [
        "acme-prod/copy:WEBHOOK_SECRET",
        "acme-prod/dev-file:.dev.secrets",
        "acme-prod/not-b64:raw",
    ]
    assert CANARY not in repr(found)
    assert h.secrets_holding(SECRETS, "absent-value") == []
    assert h.secrets_holding({"items": [{"metadata": {}, "stringData": {"k": CANARY}}]}, CANARY) == [
        "None/None:k"
    ]


# ---------------------------------------------------------------------------------------------
# Vault's audit log.
# ---------------------------------------------------------------------------------------------

WORKER_META = {
    "role": "gtc-prod-acme",
    "service_account_name": "gtc-worker",
    "service_account_namespace": "acme-prod",
}


def entry(
    kind: str, operation: str, path: str, meta: dict[str, str] | None, *, error: str = ""
) -> dict[str, Any]:
    record: dict[str, Any] = {"type": kind, "request": {"operation": operation, "path": path}}
    if meta is not None:
        record["auth"] = {"metadata": meta, "policies": ["gtc-prod-acme"]}
    if error:
        record["error"] = error
    return record


AUDIT = [
    entry("request", "update", "auth/kubernetes/login", None),
    entry("response", "update", "auth/kubernetes/login", WORKER_META),
    entry("request", "read", "secret/data/greentic/prod/acme/core/webhook/inbound", WORKER_META),
    entry("response", "read", "secret/data/greentic/prod/acme/core/webhook/inbound", WORKER_META),
    entry("request", "update", "transit/decrypt/gtc-prod-acme", WORKER_META),
    entry("response", "update", "transit/decrypt/gtc-prod-acme", WORKER_META),
    # Refused or someone else's: not part of the worker's trail.
    entry(
        "response",
        "read",
        "secret/data/greentic/prod/globex/core/x/y",
        WORKER_META,
        error="permission denied",
    ),
    entry(
        "response", "update", "auth/kubernetes/login", {**WORKER_META, "service_account_namespace": "other"}
    ),
    entry("response", "update", "auth/kubernetes/login", {**WORKER_META, "role": "gtc-prod-globex"}),
    entry("response", "update", "transit/decrypt/gtc-prod-globex", WORKER_META),
    entry("response", "read", "secret/data/greentic/prod/acme/core/webhook/inbound", None),
    entry("response", "create", "secret/data/greentic/prod/acme/core/webhook/inbound", WORKER_META),
]


def test_worker_trail_shows_login_kv_read_and_decrypt_of_that_identity_only() -> None:
    trail = h.worker_trail(
        AUDIT,
        namespace="acme-prod",
        service_account="gtc-worker",
        role="gtc-prod-acme",
        transit_key="gtc-prod-acme",
    )
    assert trail.logins == ["auth/kubernetes/login"]
    assert trail.kv_reads == ["secret/data/greentic/prod/acme/core/webhook/inbound"]
    assert trail.decrypts == ["transit/decrypt/gtc-prod-acme"]


def test_worker_trail_of_another_identity_is_empty() -> None:
    trail = h.worker_trail(
        AUDIT,
        namespace="acme-prod",
        service_account="default",
        role="gtc-prod-acme",
        transit_key="gtc-prod-acme",
    )
    assert trail == h.WorkerTrail(logins=[], kv_reads=[], decrypts=[])


def test_parse_audit_lines_keeps_audit_objects_only() -> None:
    """A log that mixes server lines, partial lines and audit JSON yields the audit entries only."""
    text = "\n".join(
        [
            "==> Vault server started! Log data will stream in below:",
            json.dumps(AUDIT[0]),
            "",
            '{"truncated": ',
            json.dumps({"time": "x", "type": "other"}),
            "[1, 2]",
            "   " + json.dumps(AUDIT[1]) + "  ",
        ]
    )
    assert h.parse_audit_lines(text) == [AUDIT[0], AUDIT[1]]


def test_deployer_manifests_satisfy_the_restricted_pod_security_standard() -> None:
    """Worker namespaces enforce `restricted`: the suite's pods say so themselves (nothing about Vault)."""
    for manifest in (h.deployment_manifest(WORKER), h.pod_manifest(WORKER)):
        spec = manifest["spec"] if manifest["kind"] == "Pod" else manifest["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = spec["containers"][0]["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["runAsNonRoot"] is True


def test_manifests_do_not_share_the_security_defaults() -> None:
    """Each manifest gets its own copy: editing one never changes the defaults or another manifest."""
    first = h.deployment_manifest(WORKER)
    first["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    first["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"].clear()
    second = h.deployment_manifest(WORKER)
    assert second["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 65532
    assert second["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }


@pytest.mark.parametrize(
    ("log", "token"),
    [
        (
            "WARNING! dev mode is enabled!\nUnseal Key: abc=\nRoot Token: s.Xy12Zw\n\nDevelopment mode...",
            "s.Xy12Zw",
        ),
        ("Root Token: s.Xy12Zw   \n", "s.Xy12Zw"),
        ("==> OpenBao server configuration:\n", None),
        ("The Root Token: is not at the start of this line", None),
    ],
)
def test_root_token_from_log(log: str, token: str | None) -> None:
    """The dev server's root token is read from its own line only."""
    assert h.root_token_from_log(log) == token


# ---------------------------------------------------------------------------------------------
# Layout and plan: what the suite reads from deploy/.
# ---------------------------------------------------------------------------------------------


def test_ignore_generated_skips_key_material_in_tls_folders_only() -> None:
    """A user's generated certificates and keys are never copied; other files and folders are."""
    names = [".gitignore", "ca.crt", "tls.crt", "tls.key", "ca-bundle.b64", "old.pem", "README.md"]
    assert layout.ignore_generated("/x/deploy/vault/tls", names) == {
        "ca.crt",
        "tls.crt",
        "tls.key",
        "ca-bundle.b64",
        "old.pem",
    }
    assert layout.ignore_generated("/x/deploy/vault", ["tls", "ca.crt", "kustomization.yaml"]) == set()


def test_layout_names_missing_files() -> None:
    """A deploy/ folder without the kustomizations and Dockerfiles is reported file by file."""
    assert layout.LAYOUT.missing_files(Path("/nonexistent")) == [
        f"deploy/{name}" for name in layout.LAYOUT.required_files()
    ]


def example_objects(**changes: Any) -> list[dict[str, Any]]:
    """A minimal rendered example: namespace, worker Deployment and its Service."""
    namespace = {
        "kind": "Namespace",
        "metadata": {"name": "acme-prod", "labels": {c.LABEL_ENV: "prod", c.LABEL_TENANT: "acme"}},
    }
    container = {
        "name": "worker",
        "image": "gtc-demo-worker:dev",
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "WEBHOOK_SECRET", "value": "secret://webhook/inbound"}],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
    }
    container.update(changes)
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "demo-worker", "namespace": "acme-prod"},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo", "greentic.ai/component": "worker"}},
                "spec": {"containers": [container]},
            },
        },
    }
    service = {
        "kind": "Service",
        "metadata": {"name": "demo-worker"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80}]},
    }
    return [namespace, deployment, service]


def test_worker_plan_reads_the_example_worker() -> None:
    """Namespace binding (team defaults), Deployment, Service, env, port and probe come from the objects."""
    worker = plan.worker_plan(example_objects(), layout.LAYOUT)
    assert (worker.namespace, worker.env, worker.tenant, worker.team) == (
        "acme-prod",
        "prod",
        "acme",
        "default",
    )
    assert (worker.deployment, worker.selector, worker.service, worker.service_port) == (
        "demo-worker",
        "app=demo",
        "demo-worker",
        80,
    )
    assert worker.secret_ref == "secret://webhook/inbound"
    assert worker.container_port == 8080
    assert worker.readiness_path == "/healthz"


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (example_objects()[1:], "expected exactly one Namespace, found 0"),
        (example_objects(env=[{"name": "WEBHOOK_SECRET", "value": "plain"}]), "is not a secret:// reference"),
        (example_objects(ports=[]), "declares no containerPort"),
        (example_objects()[:2], "expected one Service selecting the worker, found 0"),
        ([example_objects()[0], example_objects()[2]], "expected one worker Deployment, found 0"),
    ],
)
def test_worker_plan_names_what_is_missing(objects: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(plan.PlanError, match=re.escape(message)):
        plan.worker_plan(objects, layout.LAYOUT)


def test_worker_plan_needs_the_binding_labels() -> None:
    objects = example_objects()
    del objects[0]["metadata"]["labels"][c.LABEL_TENANT]
    with pytest.raises(plan.PlanError, match="lacks the binding label"):
        plan.worker_plan(objects, layout.LAYOUT)


# Rendering deploy/ needs kubectl (kustomize); the suite itself needs it too.
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@pytest.fixture(scope="module")
def rendered_deploy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, plan.DeployPlan]:
    """The suite's own preparation, for real: deploy/ copied, fresh certificates, three kustomizations
    rendered, the plan read from them."""
    workdir = tmp_path_factory.mktemp("e2e-plan")
    copy = stack.prepare_deploy(workdir, layout.LAYOUT)
    return copy, stack.render_plan(kube.Kubectl(workdir / "kubeconfig"), copy, layout.LAYOUT)


@needs_kubectl
def test_plan_of_the_real_deploy_folder(rendered_deploy: tuple[Path, plan.DeployPlan]) -> None:
    """deploy/ renders into what the suite deploys, with the names deploy/README.md declares."""
    _, deployed = rendered_deploy
    assert deployed.webhook.namespace == "gtc-system"
    assert deployed.webhook.selector == "app.kubernetes.io/name=gtc-admission"
    assert deployed.webhook.image == "gtc-admission:dev"
    assert deployed.webhook.config.service_account == BADGE
    worker = deployed.worker
    assert (worker.namespace, worker.env, worker.tenant, worker.team) == ("acme-prod", "prod", "acme", "core")
    assert worker.image == "gtc-demo-worker:dev"
    assert worker.secret_ref.startswith("secret://")
    assert "serviceAccountName" not in json.dumps(worker.pod_security_context)
    # Extra workers copy the example's enableServiceLinks: false (issue 10).
    assert worker.service_links is False
    extra = h.pod_manifest(plan.worker_app(worker, "extra"))
    assert extra["spec"]["enableServiceLinks"] is False
    assert deployed.vault_ingress_policy["metadata"] == {
        **deployed.vault_ingress_policy["metadata"],
        "name": "vault-ingress",
        "namespace": "vault",
    }
    env = plan.expected_worker_env(deployed)
    assert env[c.ENV_VAULT_ADDR].startswith("https://")  # the runtime refuses anything else
    assert env[c.ENV_VAULT_ROLE] == "gtc-prod-acme-core"  # the per-team role of bootstrap --team


@needs_kubectl
def test_the_copy_has_fresh_certificates_for_the_names_the_suite_uses(
    rendered_deploy: tuple[Path, plan.DeployPlan],
) -> None:
    """The Vault certificate covers the in-cluster name and 127.0.0.1 (the port-forward); the webhook's
    covers its Service; neither is a file from the checkout."""
    from cryptography import x509

    copy, _ = rendered_deploy
    for folder, dns, ips in (
        (layout.LAYOUT.vault_tls, layout.LAYOUT.vault_dns, layout.LAYOUT.vault_ips),
        (layout.LAYOUT.webhook_tls, layout.LAYOUT.webhook_dns, ()),
    ):
        pem = (copy / folder / "tls.crt").read_bytes()
        original = layout.DEPLOY / folder / "tls.crt"
        assert not original.exists() or original.read_bytes() != pem
        names = (
            x509.load_pem_x509_certificate(pem)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        assert set(dns) <= set(names.get_values_for_type(x509.DNSName))
        assert set(ips) <= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


@needs_kubectl
def test_the_copy_gives_the_example_namespace_the_vault_ca(
    rendered_deploy: tuple[Path, plan.DeployPlan],
) -> None:
    """The example namespace's CA ConfigMap is made from the copy's fresh Vault CA, and the worker is
    expected to get VAULT_CACERT at the projected file (the image trusts no demo CA of its own)."""
    copy, deployed = rendered_deploy
    ca = (copy / layout.LAYOUT.vault_tls / "ca.crt").read_bytes()
    assert (copy / layout.LAYOUT.example_vault_ca).read_bytes() == ca
    vault = deployed.webhook.config.environments[deployed.worker.env].vault
    assert vault is not None and vault.ca_config_map is not None
    env = plan.expected_worker_env(deployed)
    assert env[c.ENV_VAULT_CACERT] == "/var/run/secrets/greentic/vault/vault-ca.crt"
    assert "VAULT_CA_PEM" not in (layout.DEPLOY / layout.LAYOUT.worker_dockerfile).read_text()


def test_expected_worker_env_adds_kv_settings_only_when_not_the_default() -> None:
    """VAULT_KV_MOUNT / VAULT_KV_PREFIX are expected only where the config moves them (like the webhook)."""
    config = parse_config(
        {
            "environments": {
                "prod": {
                    "secretsPack": "greentic.secrets.vault",
                    "vault": {"addr": "https://v:8200", "role": "r-{env}-{tenant}-{team}", "kvMount": "kv"},
                }
            }
        }
    )
    webhook_plan = plan.WebhookPlan(
        namespace="gtc-system", deployment="d", selector="a=b", image="i", config=config
    )
    deployed = plan.DeployPlan(
        webhook=webhook_plan,
        worker=plan.worker_plan(example_objects(), layout.LAYOUT),
        vault_ingress_policy={},
    )
    env = plan.expected_worker_env(deployed)
    assert env[c.ENV_VAULT_KV_MOUNT] == "kv"
    assert c.ENV_VAULT_KV_PREFIX not in env
    assert c.ENV_VAULT_CACERT not in env  # no caConfigMap: the webhook injects none
    assert env[c.ENV_VAULT_ROLE] == "r-prod-acme-default"


# ---------------------------------------------------------------------------------------------
# The suite's expectations against the real decision core (gtc-admission's offline review, the same
# /mutate then /validate the cluster runs), so a mismatch shows here and not only on a kind cluster.
# ---------------------------------------------------------------------------------------------


def offline(deployed: plan.DeployPlan, manifest: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    """(allowed, message, object after the patch) for ``manifest`` in the worker namespace."""
    result = review_text(
        json.dumps(manifest), config=deployed.webhook.config, namespace=deployed.worker.namespace
    )
    response = result.review["response"]
    patched = manifest
    if "patch" in response:
        operations = json.loads(base64.b64decode(response["patch"]))
        patched = jsonpatch.apply_patch(manifest, operations)
    return result.allowed, str((response.get("status") or {}).get("message", "")), patched


def as_kubectl_error(message: str) -> str:
    """How kubectl prints a webhook denial (the API server wraps the response's status message)."""
    return f'Error from server (Forbidden): admission webhook "x.greentic.ai" denied the request: {message}'


@needs_kubectl
@pytest.mark.parametrize("build", [h.pod_manifest, h.deployment_manifest])
def test_dev_secret_manifests_are_refused_with_the_rule_and_field_path(
    rendered_deploy: tuple[Path, plan.DeployPlan], build: Any
) -> None:
    """The pod and the Deployment the suite applies are denied, with what the tests look for."""
    _, deployed = rendered_deploy
    manifest = h.with_dev_secret(build(plan.worker_app(deployed.worker, "dev-secret")), "gtc-dev-secrets")
    allowed, message, _ = offline(deployed, manifest)
    assert not allowed
    assert h.refused_with_rule(as_kubectl_error(message), c.RULE_DEV_SECRET_REFERENCE)
    assert "spec.containers[0].envFrom[0].secretRef.name" in message


@needs_kubectl
@pytest.mark.parametrize(
    ("env", "labels"),
    [
        ({}, {}),
        ({"GREENTIC_SECRETS_BOOT_TIMEOUT": "10"}, {}),  # the cut-off worker
        ({}, {"e2e.greentic.ai/chaos": "true"}),  # the chaos workers
    ],
)
def test_extra_workers_are_patched_into_what_the_suite_expects(
    rendered_deploy: tuple[Path, plan.DeployPlan], env: dict[str, str], labels: dict[str, str]
) -> None:
    """A worker pod the suite creates is admitted, and the webhook's real patch makes worker_problems()
    empty with expected_worker_env(): the e2e check and the webhook agree on what "on Vault" means."""
    _, deployed = rendered_deploy
    pod = h.pod_manifest(plan.worker_app(deployed.worker, "extra", env=env, labels=labels))
    assert h.worker_problems(pod, plan.expected_worker_env(deployed), BADGE) != []
    allowed, message, patched = offline(deployed, pod)
    assert allowed, message
    assert h.worker_problems(patched, plan.expected_worker_env(deployed), BADGE) == []
    assert h.unpatched_workers({"items": [patched]}, BADGE) == []


@needs_kubectl
def test_the_router_is_admitted_unchanged(rendered_deploy: tuple[Path, plan.DeployPlan]) -> None:
    """The router Deployment's pod gets no patch, and the router check accepts it as it is."""
    _, deployed = rendered_deploy
    router = stack.router_app(deployed)
    pod = h.pod_manifest(router)
    allowed, message, patched = offline(deployed, pod)
    assert allowed, message
    assert patched == pod
    assert h.router_problems(patched, stack.ROUTER_ENV) == []
    assert offline(deployed, h.deployment_manifest(router))[0]


def test_deploy_plan_refuses_a_manifest_that_would_pull_a_kind_loaded_image() -> None:
    """Our images only exist on the nodes through `kind load`: imagePullPolicy Always is a plan error."""
    webhook: list[dict[str, Any]] = [
        {
            "kind": "Deployment",
            "metadata": {"name": "gtc-admission", "namespace": "gtc-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "w"}},
                "template": {
                    "spec": {"containers": [{"image": "gtc-admission:dev", "imagePullPolicy": "Always"}]}
                },
            },
        },
        {"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"config.yaml": "{}"}},
    ]
    vault = [{"kind": "NetworkPolicy", "metadata": {"name": "vault-ingress", "namespace": "vault"}}]
    with pytest.raises(plan.PlanError, match=r"would pull gtc-admission:dev from a registry"):
        plan.deploy_plan(vault=vault, webhook=webhook, example=example_objects(), layout=layout.LAYOUT)
    webhook[0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    deployed = plan.deploy_plan(vault=vault, webhook=webhook, example=example_objects(), layout=layout.LAYOUT)
    assert deployed.webhook.selector == "app=w"
    assert deployed.worker.image == "gtc-demo-worker:dev"


def test_deploy_plan_needs_the_vault_ingress_policy() -> None:
    """The NetworkPolicy test removes and restores it: without it in deploy/vault the plan fails first."""
    webhook = [
        {
            "kind": "Deployment",
            "metadata": {"name": "gtc-admission", "namespace": "gtc-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "w"}},
                "template": {"spec": {"containers": [{"image": "x:1"}]}},
            },
        },
        {"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"config.yaml": "{}"}},
    ]
    with pytest.raises(plan.PlanError, match=r"NetworkPolicy/vault-ingress, found 0"):
        plan.deploy_plan(vault=[], webhook=webhook, example=example_objects(), layout=layout.LAYOUT)
