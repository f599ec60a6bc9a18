"""Every kustomization under deploy/, rendered with `kubectl kustomize`, checked for the safety properties of
issue 4 on the rendered YAML (what `kubectl apply -k` would send), one test per property.

deploy/ is copied to a temporary folder first and the git-ignored TLS inputs of the self-managed-CA overlay
and of the demo Vault are generated there, so the test neither needs nor touches a developer's files.
Selectors are evaluated (matchLabels + matchExpressions), not compared as text, so that a selector that
reads right but matches the wrong namespaces or pods fails.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from gtc_admission import constants as c
from gtc_admission.cli import build_parser
from gtc_admission.config import Config, parse_config
from gtc_admission.offline import review_text
from gtc_admission.tls import generate_certificates, write_certificates

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLE_CONFIG = DEPLOY / "webhook" / "config.yaml"
KUBECTL = shutil.which("kubectl")


# Every kustomization of deploy/ (relative dirs). A new one must be added here, so it gets checked too.
KUSTOMIZATIONS = {
    "audit",
    "webhook",
    "overlays/self-managed-ca",
    "overlays/cert-manager",
    "vault",
    "worker-namespace",
    "examples/acme-prod",
}
WEBHOOK_OVERLAYS = ["overlays/self-managed-ca", "overlays/cert-manager"]
WEBHOOK_KUSTOMIZATIONS = ["webhook", *WEBHOOK_OVERLAYS]

WEBHOOK_NAMESPACE = "gtc-system"
WEBHOOK_NAME = "gtc-admission"
POD_WEBHOOK = "validate.gtc-admission.greentic.ai"
SECRET_WEBHOOK = "secrets.validate.gtc-admission.greentic.ai"
SERVICE_DNS = f"{WEBHOOK_NAME}.{WEBHOOK_NAMESPACE}.svc"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTECTED_NAMESPACES = ("gtc-system", "kube-system")
VAULT_NAMESPACE = "vault"
VAULT_DNS_NAMES = ["vault.vault.svc", "vault.vault.svc.cluster.local", "localhost"]
WORKER_NAMESPACE = "acme-prod"
WORKER_HTTP_PORT = 8080
NON_ROOT_UID = 65532

Doc = dict[str, Any]


# --- rendering ----------------------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[Doc]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ in a temp folder, with fresh TLS inputs where the overlays read git-ignored files."""
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root)
    write_certificates(
        generate_certificates([SERVICE_DNS, f"{SERVICE_DNS}.cluster.local"]),
        root / "overlays" / "self-managed-ca" / "tls",
    )
    write_certificates(generate_certificates(VAULT_DNS_NAMES, ["127.0.0.1"]), root / "vault" / "tls")
    # docs/install.md, step 5: the demo Vault's CA handed to the example worker namespace.
    shutil.copy(root / "vault" / "tls" / "ca.crt", root / "examples" / "acme-prod" / "tls" / "ca.crt")
    return root


@pytest.fixture(scope="module")
def rendered(deploy_copy: Path) -> dict[str, list[Doc]]:
    if KUBECTL is None:
        # Never a vacuous pass: every test that needs the rendered YAML is reported as skipped.
        pytest.skip("kubectl not installed: cannot render the kustomizations (kubectl kustomize)")
    found = {str(path.parent.relative_to(deploy_copy)) for path in deploy_copy.rglob("kustomization.yaml")}
    assert found == KUSTOMIZATIONS, "a kustomization was added or removed: list it in KUSTOMIZATIONS"
    return {name: kustomize(deploy_copy / name) for name in sorted(found)}


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8")))


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = find(docs, kind, name)
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def webhook_configs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (kind, webhook)
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for webhook in one(docs, kind, WEBHOOK_NAME)["webhooks"]
    ]


def pod_templates(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield f"CronJob/{doc['metadata']['name']}", doc["spec"]["jobTemplate"]["spec"]["template"]
        elif doc["kind"] == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc


def container(docs: list[Doc], deployment: str) -> Doc:
    containers = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# --- label selectors, evaluated -----------------------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels entry and every matchExpression must hold."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        assert op in {"In", "NotIn", "Exists", "DoesNotExist"}, op
    return True


def namespace_labels(name: str, **labels: str) -> dict[str, str]:
    """Labels of a namespace as the API server stores them (it always adds kubernetes.io/metadata.name)."""
    return {NAMESPACE_NAME_LABEL: name, **labels}


def test_selector_helper_semantics() -> None:
    """The selector evaluator itself: matchLabels AND matchExpressions, each operator."""
    sel = {
        "matchLabels": {"a": "1"},
        "matchExpressions": [
            {"key": "b", "operator": "Exists"},
            {"key": "c", "operator": "NotIn", "values": ["x"]},
            {"key": "d", "operator": "DoesNotExist"},
            {"key": "e", "operator": "In", "values": ["y", "z"]},
        ],
    }
    assert selector_matches(sel, {"a": "1", "b": "", "e": "z"})
    assert selector_matches(sel, {"a": "1", "b": "", "c": "w", "e": "y"})
    assert not selector_matches(sel, {"a": "2", "b": "", "e": "z"})
    assert not selector_matches(sel, {"a": "1", "e": "z"})
    assert not selector_matches(sel, {"a": "1", "b": "", "c": "x", "e": "z"})
    assert not selector_matches(sel, {"a": "1", "b": "", "d": "", "e": "z"})
    assert not selector_matches(sel, {"a": "1", "b": ""})
    assert selector_matches({}, {}) and selector_matches(None, {"any": "thing"})


# --- every kustomization renders ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_kustomization_renders(rendered: dict[str, list[Doc]], name: str) -> None:
    """kubectl kustomize succeeds and yields objects, each with apiVersion, kind and name."""
    docs = rendered[name]
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc


# --- the webhook configurations -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_mutating_webhook_is_for_pod_create_only(rendered: dict[str, list[Doc]], name: str) -> None:
    """MutatingWebhookConfiguration: pods, CREATE, nothing else, on /mutate."""
    (webhook,) = one(rendered[name], "MutatingWebhookConfiguration", WEBHOOK_NAME)["webhooks"]
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["clientConfig"]["service"]["path"] == "/mutate"


def _rule_set(webhook: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, op)
        for rule in webhook["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for op in rule["operations"]
    }


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_validating_webhook_covers_pods_ephemeral_containers_and_controllers(
    rendered: dict[str, list[Doc]], name: str
) -> None:
    """Validating: pods CREATE, pods/ephemeralcontainers UPDATE, workload controllers CREATE and UPDATE."""
    webhook = validating_webhook(rendered[name], POD_WEBHOOK)
    controllers = [
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    assert _rule_set(webhook) == {
        ("", "pods", "CREATE"),
        ("", "pods/ephemeralcontainers", "UPDATE"),
        *((group, resource, op) for group, resource in controllers for op in ("CREATE", "UPDATE")),
    }
    assert all(rule["apiVersions"] == ["v1"] for rule in webhook["rules"])
    assert webhook["clientConfig"]["service"]["path"] == "/validate"


def validating_webhook(docs: list[Doc], name: str) -> Doc:
    webhooks = one(docs, "ValidatingWebhookConfiguration", WEBHOOK_NAME)["webhooks"]
    assert [w["name"] for w in webhooks] == [POD_WEBHOOK, SECRET_WEBHOOK]
    return next(w for w in webhooks if w["name"] == name)


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_secret_webhook_is_sent_only_the_forbidden_names(
    rendered: dict[str, list[Doc]], name: str, config: Config
) -> None:
    """Secrets CREATE/UPDATE go to /validate only when the name is forbidden (matchConditions in CEL), and
    the names in the CEL expression are exactly the config's forbiddenSecrets."""
    webhook = validating_webhook(rendered[name], SECRET_WEBHOOK)
    assert _rule_set(webhook) == {("", "secrets", "CREATE"), ("", "secrets", "UPDATE")}
    assert webhook["clientConfig"]["service"]["path"] == "/validate"
    (condition,) = webhook["matchConditions"]
    expression = condition["expression"]
    match = re.fullmatch(r"has\(object\.metadata\.name\) && object\.metadata\.name in \[(.*)\]", expression)
    assert match, expression
    names = re.findall(r"'([^']*)'", match.group(1))
    assert ", ".join(f"'{n}'" for n in names) == match.group(1), "only quoted names in the list"
    assert set(names) == config.forbidden_secrets
    assert len(names) == len(set(names))


def test_secret_webhook_condition_selects_the_forbidden_names_only() -> None:
    """The CEL condition, evaluated by a CEL implementation (cel-python), on the shapes it meets: named
    forbidden, named other, and generateName (no name yet: without has() the evaluation would fail, and
    with failurePolicy Fail the API server would refuse that Secret)."""
    (webhook,) = [
        w
        for doc in yaml.safe_load_all((DEPLOY / "webhook" / "webhooks.yaml").read_text())
        if doc["kind"] == "ValidatingWebhookConfiguration"
        for w in doc["webhooks"]
        if w["name"] == SECRET_WEBHOOK
    ]
    expression = webhook["matchConditions"][0]["expression"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))

    def sent(metadata: dict[str, str]) -> bool:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": {"k": "dg=="}}
        return bool(program.evaluate({"object": json_to_cel(secret)}))

    assert sent({"name": "gtc-dev-secrets", "namespace": "acme-prod"})
    assert not sent({"name": "app-secrets"})
    assert not sent({"name": "gtc-dev-secrets-2"})
    assert not sent({"generateName": "gtc-dev-secrets-"})
    unguarded = environment.program(
        environment.compile(expression.removeprefix("has(object.metadata.name) && "))
    )
    with pytest.raises(CELEvalError):
        unguarded.evaluate({"object": json_to_cel({"metadata": {"generateName": "g-"}})})


SAFETY = [
    ("failurePolicy Fail", lambda w: w.get("failurePolicy") == "Fail"),
    ("sideEffects None", lambda w: w.get("sideEffects") == "None"),
    ("admissionReviewVersions [v1]", lambda w: w.get("admissionReviewVersions") == ["v1"]),
    (
        "timeoutSeconds <= 5",
        lambda w: isinstance(w.get("timeoutSeconds"), int) and 1 <= w["timeoutSeconds"] <= 5,
    ),
    ("no objectSelector", lambda w: not w.get("objectSelector")),
]


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
@pytest.mark.parametrize(("rule", "holds"), SAFETY, ids=[rule for rule, _ in SAFETY])
def test_webhook_safety_rules(rendered: dict[str, list[Doc]], name: str, rule: str, holds: Any) -> None:
    """Both webhook configurations: fail closed, no side effects, v1 only, a short timeout."""
    for kind, webhook in webhook_configs(rendered[name]):
        assert holds(webhook), f"{kind} {webhook['name']}: {rule}"


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_mutating_webhook_is_reinvoked_if_needed(rendered: dict[str, list[Doc]], name: str) -> None:
    """reinvocationPolicy IfNeeded: containers added by later webhooks get the Vault settings too."""
    (webhook,) = one(rendered[name], "MutatingWebhookConfiguration", WEBHOOK_NAME)["webhooks"]
    assert webhook["reinvocationPolicy"] == "IfNeeded"


NAMESPACE_CASES = [
    ("acme-prod", {c.LABEL_ENV: "prod", c.LABEL_TENANT: "acme"}, True),
    ("acme-dev", {c.LABEL_ENV: "dev"}, True),
    ("unlabelled", {}, False),
    ("tenant-only", {c.LABEL_TENANT: "acme"}, False),
    ("gtc-system", {c.LABEL_ENV: "prod"}, False),  # even if someone labels it
    ("kube-system", {c.LABEL_ENV: "prod"}, False),
    ("default", {}, False),
]


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
@pytest.mark.parametrize(("namespace", "labels", "sent"), NAMESPACE_CASES)
def test_namespace_selector(
    rendered: dict[str, list[Doc]], name: str, namespace: str, labels: dict[str, str], sent: bool
) -> None:
    """Only namespaces with greentic.ai/env reach the webhooks, never gtc-system or kube-system."""
    for kind, webhook in webhook_configs(rendered[name]):
        matched = selector_matches(webhook["namespaceSelector"], namespace_labels(namespace, **labels))
        assert matched is sent, f"{kind}: namespace {namespace} {labels}"


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_namespace_selector_excludes_by_immutable_name_label(
    rendered: dict[str, list[Doc]], name: str
) -> None:
    """The exclusion uses kubernetes.io/metadata.name (set by the API server, not forgeable)."""
    for _, webhook in webhook_configs(rendered[name]):
        expressions = webhook["namespaceSelector"]["matchExpressions"]
        assert {
            "key": NAMESPACE_NAME_LABEL,
            "operator": "NotIn",
            "values": list(PROTECTED_NAMESPACES),
        } in expressions
        assert {"key": c.LABEL_ENV, "operator": "Exists"} in expressions


def test_namespace_selector_agrees_with_the_config_bindings(
    rendered: dict[str, list[Doc]], config: Config
) -> None:
    """A namespace labelled the way the webhook binds it is sent to both webhooks; unbound ones are not.

    Namespaces bound only statically (config `namespaces:`) must still carry greentic.ai/env in a cluster:
    the example namespace does, with the same env/tenant/team as its static binding.
    """
    docs = rendered["overlays/self-managed-ca"]
    for namespace, binding in config.namespaces.items():
        labels = {c.LABEL_ENV: binding.env, c.LABEL_TENANT: binding.tenant, c.LABEL_TEAM: binding.team}
        for kind, webhook in webhook_configs(docs):
            assert selector_matches(webhook["namespaceSelector"], namespace_labels(namespace, **labels)), kind
    example = one(rendered["examples/acme-prod"], "Namespace")
    labels = example["metadata"]["labels"]
    binding = config.namespaces[example["metadata"]["name"]]
    assert (labels[c.LABEL_ENV], labels[c.LABEL_TENANT], labels[c.LABEL_TEAM]) == (
        binding.env,
        binding.tenant,
        binding.team,
    )
    for kind, webhook in webhook_configs(docs):
        assert selector_matches(webhook["namespaceSelector"], namespace_labels(WORKER_NAMESPACE, **labels)), (
            kind
        )


def test_own_namespaces_are_never_sent_to_the_webhook(rendered: dict[str, list[Doc]]) -> None:
    """gtc-system and vault, as rendered, do not match the webhooks' namespaceSelector."""
    docs = rendered["overlays/self-managed-ca"]
    for name in ("overlays/self-managed-ca", "vault"):
        for namespace in find(rendered[name], "Namespace"):
            labels = namespace_labels(
                namespace["metadata"]["name"], **namespace["metadata"].get("labels", {})
            )
            for kind, webhook in webhook_configs(docs):
                assert not selector_matches(webhook["namespaceSelector"], labels), (kind, labels)


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhooks_call_the_service_that_serves_them(rendered: dict[str, list[Doc]], name: str) -> None:
    """clientConfig -> Service gtc-system/gtc-admission:443 -> the container's https port (8443 = --port)."""
    docs = rendered[name]
    service = one(docs, "Service", WEBHOOK_NAME)
    assert service["metadata"]["namespace"] == WEBHOOK_NAMESPACE
    (port,) = service["spec"]["ports"]
    for kind, webhook in webhook_configs(docs):
        assert webhook["clientConfig"]["service"] == {
            "name": WEBHOOK_NAME,
            "namespace": WEBHOOK_NAMESPACE,
            "path": webhook["clientConfig"]["service"]["path"],
            "port": port["port"],
        }, kind
        assert "url" not in webhook["clientConfig"]
    assert port["port"] == 443
    server = container(docs, WEBHOOK_NAME)
    (container_port,) = server["ports"]
    assert port["targetPort"] == container_port["name"] == "https"
    args = build_parser().parse_args(server["args"])
    assert container_port["containerPort"] == args.port == 8443
    pod_labels = one(docs, "Deployment", WEBHOOK_NAME)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)


# --- certificates: self-managed CA and cert-manager ---------------------------------------------------------


def test_self_managed_ca_bundle_verifies_the_serving_certificate(rendered: dict[str, list[Doc]]) -> None:
    """caBundle of both webhooks is the Secret's CA; it verifies the serving certificate for the Service."""
    docs = rendered["overlays/self-managed-ca"]
    secret = one(docs, "Secret", "gtc-admission-tls")
    assert secret["type"] == "kubernetes.io/tls"
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    ca = x509.load_pem_x509_certificates(data["ca.crt"])
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    for kind, webhook in webhook_configs(docs):
        bundle = base64.b64decode(webhook["clientConfig"]["caBundle"])
        assert bundle == data["ca.crt"], kind
        verifier = (
            PolicyBuilder()
            .store(Store(x509.load_pem_x509_certificates(bundle)))
            .build_server_verifier(x509.DNSName(SERVICE_DNS))
        )
        verifier.verify(leaf, [])  # raises when the chain or the name does not verify
    assert ca


def test_base_and_cert_manager_carry_no_ca_bundle(rendered: dict[str, list[Doc]]) -> None:
    """Only the self-managed overlay writes caBundle; cert-manager injects it, the base has none."""
    for name in ("webhook", "overlays/cert-manager"):
        for kind, webhook in webhook_configs(rendered[name]):
            assert "caBundle" not in webhook["clientConfig"], (name, kind)


def test_cert_manager_issues_the_mounted_secret_and_injects_its_ca(rendered: dict[str, list[Doc]]) -> None:
    """The Certificate names the Service and writes the mounted Secret; both configs inject its CA."""
    docs = rendered["overlays/cert-manager"]
    volumes = one(docs, "Deployment", WEBHOOK_NAME)["spec"]["template"]["spec"]["volumes"]
    (mounted,) = [v["secret"]["secretName"] for v in volumes if "secret" in v]
    serving = [cert for cert in find(docs, "Certificate") if cert["spec"].get("secretName") == mounted]
    assert len(serving) == 1
    certificate = serving[0]
    assert SERVICE_DNS in certificate["spec"]["dnsNames"]
    assert not certificate["spec"].get("isCA", False)
    issuer_ref = certificate["spec"]["issuerRef"]
    assert one(docs, issuer_ref["kind"], issuer_ref["name"])  # the issuer is part of the overlay
    expected = f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = one(docs, kind, WEBHOOK_NAME)["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == expected, kind
    assert not find(docs, "Secret")  # cert-manager writes it; nothing secret is rendered


# --- the webhook Deployment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_runs_two_replicas_spread_over_nodes(rendered: dict[str, list[Doc]], name: str) -> None:
    """2 replicas, pod anti-affinity on the node, rolling updates that never drop below 2 ready."""
    deployment = one(rendered[name], "Deployment", WEBHOOK_NAME)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    template = deployment["spec"]["template"]
    anti = template["spec"]["affinity"]["podAntiAffinity"]
    terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and selector_matches(t["labelSelector"], template["metadata"]["labels"])
        for t in terms
    )


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_has_a_pod_disruption_budget(rendered: dict[str, list[Doc]], name: str) -> None:
    """A PDB over the webhook's pods keeps at least one serving through voluntary disruptions."""
    docs = rendered[name]
    pdb = one(docs, "PodDisruptionBudget", WEBHOOK_NAME)
    deployment = one(docs, "Deployment", WEBHOOK_NAME)
    assert selector_matches(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_probes_healthz_and_readyz_over_https(rendered: dict[str, list[Doc]], name: str) -> None:
    """Liveness GET /healthz, readiness GET /readyz, both HTTPS on the serving port."""
    server = container(rendered[name], WEBHOOK_NAME)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = server[probe]["httpGet"]
        assert (get["path"], get["scheme"], get["port"]) == (path, "HTTPS", "https"), probe


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_arguments_match_the_mounts(rendered: dict[str, list[Doc]], name: str) -> None:
    """The real CLI parses the args; --config is the ConfigMap's key, the TLS pair is in the Secret mount."""
    docs = rendered[name]
    server = container(docs, WEBHOOK_NAME)
    args = build_parser().parse_args(server["args"])
    assert args.command == "serve" and args.host == "0.0.0.0"
    volumes = {
        v["name"]: v for v in one(docs, "Deployment", WEBHOOK_NAME)["spec"]["template"]["spec"]["volumes"]
    }
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    config_mount = mounts[str(args.config.parent)]
    config_map = one(docs, "ConfigMap", volumes[config_mount["name"]]["configMap"]["name"])
    assert args.config.name in config_map["data"]
    tls_mount = mounts[str(args.tls_cert.parent)]
    assert str(args.tls_key.parent) == tls_mount["mountPath"]
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == "gtc-admission-tls"
    assert config_mount.get("readOnly") and tls_mount.get("readOnly")
    assert "subPath" not in tls_mount  # a subPath mount never sees a renewed Secret


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_writes_only_to_a_memory_backed_tmp(rendered: dict[str, list[Doc]], name: str) -> None:
    """Root filesystem read-only; the one writable mount is /tmp, in memory (the pair's private copies)."""
    docs = rendered[name]
    server = container(docs, WEBHOOK_NAME)
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {
        v["name"]: v for v in one(docs, "Deployment", WEBHOOK_NAME)["spec"]["template"]["spec"]["volumes"]
    }
    writable = [m for m in server["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]  # tempfile's default folder
    assert volumes[writable[0]["name"]]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_config_map_is_the_example_config(
    rendered: dict[str, list[Doc]], name: str, config: Config
) -> None:
    """The ConfigMap holds deploy/webhook/config.yaml byte for byte, and it parses with parse_config."""
    (config_map,) = [
        cm
        for cm in find(rendered[name], "ConfigMap")
        if cm["metadata"]["name"].startswith("gtc-admission-config")
    ]
    text = config_map["data"]["config.yaml"]
    assert text == EXAMPLE_CONFIG.read_text(encoding="utf-8")
    assert parse_config(yaml.safe_load(text)) == config


@pytest.mark.parametrize("name", WEBHOOK_KUSTOMIZATIONS)
def test_webhook_requests_resources(rendered: dict[str, list[Doc]], name: str) -> None:
    """CPU and memory requests, and a memory limit."""
    resources = container(rendered[name], WEBHOOK_NAME)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_webhook_rbac_reads_namespaces_only(rendered: dict[str, list[Doc]]) -> None:
    """The webhook's ServiceAccount can get/list/watch namespaces, and nothing else, anywhere."""
    docs = rendered["overlays/self-managed-ca"]
    deployment = one(docs, "Deployment", WEBHOOK_NAME)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert one(docs, "ServiceAccount", account)
    rules: list[Doc] = []
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        subjects = binding.get("subjects") or []
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in subjects):
            role = one(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"])
            rules.extend(role["rules"])
    assert rules, "no role bound to the webhook's ServiceAccount"
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {("", "namespaces", "get"), ("", "namespaces", "list"), ("", "namespaces", "watch")}
    assert all("resourceNames" not in rule and "nonResourceURLs" not in rule for rule in rules)


def test_webhook_image_runs_the_user_of_the_dockerfile(rendered: dict[str, list[Doc]]) -> None:
    """The Dockerfile's USER is the pod's runAsUser, so runAsNonRoot holds with the image as built."""
    pod = one(rendered["webhook"], "Deployment", WEBHOOK_NAME)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == NON_ROOT_UID
    assert _dockerfile_user("webhook.Dockerfile") == f"{NON_ROOT_UID}:{NON_ROOT_UID}"


# --- restricted pod security, for every workload rendered ---------------------------------------------------


def _all_pod_templates(rendered: dict[str, list[Doc]]) -> list[tuple[str, str, Doc]]:
    return [
        (name, what, template) for name, docs in rendered.items() for what, template in pod_templates(docs)
    ]


def _effective(pod: Doc, ctr: Doc, key: str) -> Any:
    return ctr.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


RESTRICTED = [
    ("runAsNonRoot", lambda pod, ctr: _effective(pod, ctr, "runAsNonRoot") is True),
    ("runAsUser not 0", lambda pod, ctr: _effective(pod, ctr, "runAsUser") not in (0, None)),
    (
        "allowPrivilegeEscalation false",
        lambda pod, ctr: ctr["securityContext"].get("allowPrivilegeEscalation") is False,
    ),
    (
        "capabilities drop ALL",
        lambda pod, ctr: ctr["securityContext"].get("capabilities", {}).get("drop") == ["ALL"],
    ),
    ("no added capabilities", lambda pod, ctr: not ctr["securityContext"].get("capabilities", {}).get("add")),
    (
        "seccompProfile RuntimeDefault",
        lambda pod, ctr: (_effective(pod, ctr, "seccompProfile") or {}).get("type") == "RuntimeDefault",
    ),
    ("readOnlyRootFilesystem", lambda pod, ctr: ctr["securityContext"].get("readOnlyRootFilesystem") is True),
    ("not privileged", lambda pod, ctr: not ctr["securityContext"].get("privileged", False)),
    ("resource requests", lambda pod, ctr: bool(ctr.get("resources", {}).get("requests"))),
    ("a pinned image tag", lambda pod, ctr: ":" in ctr["image"] and not ctr["image"].endswith(":latest")),
    ("IfNotPresent (kind load)", lambda pod, ctr: ctr.get("imagePullPolicy") == "IfNotPresent"),
]


@pytest.mark.parametrize(("rule", "holds"), RESTRICTED, ids=[rule for rule, _ in RESTRICTED])
def test_every_container_is_restricted(rendered: dict[str, list[Doc]], rule: str, holds: Any) -> None:
    """Every container of every workload (webhook, Vault, demo worker) follows the restricted profile."""
    templates = _all_pod_templates(rendered)
    assert {what for _, what, _ in templates} >= {
        "Deployment/gtc-admission",
        "Deployment/vault",
        "Deployment/demo-worker",
    }
    for name, what, template in templates:
        pod = template["spec"]
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), what
        for ctr in pod.get("initContainers", []) + pod["containers"]:
            assert holds(pod, ctr), f"{name}: {what} container {ctr['name']}: {rule}"


def test_system_namespaces_enforce_the_restricted_pod_security_standard(
    rendered: dict[str, list[Doc]],
) -> None:
    """gtc-system and vault refuse any pod that is not restricted (Pod Security admission)."""
    for name in ("webhook", "vault", "examples/acme-prod"):
        for namespace in find(rendered[name], "Namespace"):
            assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_only_tls_secrets_are_rendered(rendered: dict[str, list[Doc]], config: Config) -> None:
    """No kustomization carries a secret value: the only Secrets are serving certificates."""
    for name, docs in rendered.items():
        for secret in find(docs, "Secret"):
            assert secret["type"] == "kubernetes.io/tls", (name, secret["metadata"]["name"])
            assert secret["metadata"]["name"] not in config.forbidden_secrets


# --- the worker namespace component -------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    namespace: tuple[tuple[str, str], ...] | None
    pods: tuple[tuple[str, str], ...] | None
    port: int | str | None
    protocol: str


def _freeze(selector: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...] | None:
    if selector is None:
        return None
    assert not selector.get("matchExpressions"), "the helper only reads matchLabels"
    return tuple(sorted((selector.get("matchLabels") or {}).items()))


def allowed(docs: list[Doc], pod_labels: Mapping[str, str], direction: str) -> tuple[bool, set[Peer]]:
    """(isolated?, peers) for a pod: the union of every NetworkPolicy that selects it, for one direction."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolated, peers = False, set()
    for policy in find(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if direction not in spec.get("policyTypes", []) or not selector_matches(
            spec["podSelector"], pod_labels
        ):
            continue
        isolated = True
        for rule in spec.get(key) or []:
            ports = rule.get("ports") or [{"port": None, "protocol": "TCP"}]
            sources = rule.get(peers_key) or [{}]
            for source in sources:
                assert "ipBlock" not in source
                for port in ports:
                    peers.add(
                        Peer(
                            _freeze(source.get("namespaceSelector")),
                            _freeze(source.get("podSelector")),
                            port.get("port"),
                            port.get("protocol", "TCP"),
                        )
                    )
    return isolated, peers


def _example(rendered: dict[str, list[Doc]]) -> list[Doc]:
    return rendered["examples/acme-prod"]


def test_worker_namespace_has_the_badge(rendered: dict[str, list[Doc]], config: Config) -> None:
    """The component brings ServiceAccount gtc-worker (the config's badge), with no API token mounted."""
    for name in ("worker-namespace", "examples/acme-prod"):
        account = one(rendered[name], "ServiceAccount", config.service_account)
        assert account["automountServiceAccountToken"] is False
    assert one(_example(rendered), "ServiceAccount")["metadata"]["namespace"] == WORKER_NAMESPACE


def test_worker_namespace_denies_by_default(rendered: dict[str, list[Doc]]) -> None:
    """A policy selecting every pod, for ingress and egress, allowing nothing: any other pod is cut off."""
    docs = _example(rendered)
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in find(docs, "NetworkPolicy")
    )
    router = {"greentic.ai/component": "router"}
    assert allowed(docs, router, "Egress") == (True, set())
    assert allowed(docs, router, "Ingress") == (True, set())


def test_worker_egress_is_vault_and_dns_only(rendered: dict[str, list[Doc]], config: Config) -> None:
    """A worker pod (the config's worker selector) may reach exactly Vault on 8200 and kube-dns on 53."""
    vault_docs = rendered["vault"]
    vault_pod_labels = one(vault_docs, "Deployment", "vault")["spec"]["template"]["metadata"]["labels"]
    (vault_port,) = one(vault_docs, "Service", "vault")["spec"]["ports"]
    (vault_container_port,) = container(vault_docs, "vault")["ports"]
    assert vault_container_port["name"] == vault_port["targetPort"]
    isolated, peers = allowed(_example(rendered), dict(config.selectors.worker), "Egress")
    assert isolated
    assert vault_container_port["containerPort"] == 8200
    assert peers == {
        Peer(
            ((NAMESPACE_NAME_LABEL, VAULT_NAMESPACE),),
            _freeze({"matchLabels": {"app.kubernetes.io/name": "vault"}}),
            8200,
            "TCP",
        ),
        Peer(((NAMESPACE_NAME_LABEL, "kube-system"),), (("k8s-app", "kube-dns"),), 53, "UDP"),
        Peer(((NAMESPACE_NAME_LABEL, "kube-system"),), (("k8s-app", "kube-dns"),), 53, "TCP"),
    }
    # ... and those selectors really pick the demo Vault's pods in its namespace.
    (vault_peer,) = [p for p in peers if p.port == 8200]
    assert selector_matches({"matchLabels": dict(vault_peer.pods or ())}, vault_pod_labels)
    assert one(vault_docs, "Deployment", "vault")["metadata"]["namespace"] == VAULT_NAMESPACE


def test_worker_ingress_is_its_http_port_only(rendered: dict[str, list[Doc]], config: Config) -> None:
    """Workers accept connections on 8080 (the inbound webhook) and nothing else."""
    isolated, peers = allowed(_example(rendered), dict(config.selectors.worker), "Ingress")
    assert isolated
    assert peers == {Peer(None, None, WORKER_HTTP_PORT, "TCP")}
    worker = container(_example(rendered), "demo-worker")
    assert [p["containerPort"] for p in worker["ports"]] == [WORKER_HTTP_PORT]


# --- the demo Vault -----------------------------------------------------------------------------------------


def _vault_config(rendered: dict[str, list[Doc]]) -> str:
    (config_map,) = [
        cm for cm in find(rendered["vault"], "ConfigMap") if cm["metadata"]["name"].startswith("vault-config")
    ]
    return str(config_map["data"]["config.hcl"])


def test_vault_runs_dev_mode_with_its_config(rendered: dict[str, list[Doc]]) -> None:
    """bao server -dev, with the ConfigMap's config file, in namespace vault, one replica."""
    docs = rendered["vault"]
    deployment = one(docs, "Deployment", "vault")
    assert deployment["metadata"]["namespace"] == VAULT_NAMESPACE and deployment["spec"]["replicas"] == 1
    server = container(docs, "vault")
    command = server["command"]
    assert command[:3] == ["bao", "server", "-dev"]
    assert "-dev-no-store-token" in command
    (config_flag,) = [arg for arg in command if arg.startswith("-config=")]
    config_path = Path(config_flag.removeprefix("-config="))
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    cm_name = volumes[mounts[str(config_path.parent)]["name"]]["configMap"]["name"]
    assert config_path.name in one(docs, "ConfigMap", cm_name)["data"]
    # The dev listener (plain HTTP) must stay on the pod's loopback.
    (dev_listen,) = [arg for arg in command if arg.startswith("-dev-listen-address=")]
    assert dev_listen.removeprefix("-dev-listen-address=").startswith("127.0.0.1:")


def _hcl_value(text: str, key: str) -> str:
    match = re.search(rf'^\s*{re.escape(key)}\s*=\s*"([^"]*)"', text, re.MULTILINE)
    assert match, f"{key} not in the Vault config"
    return match.group(1)


def test_vault_serves_tls_from_its_secret(rendered: dict[str, list[Doc]]) -> None:
    """The TLS listener's files are in the vault-tls Secret mount; TLS 1.2 at least."""
    docs = rendered["vault"]
    text = _vault_config(rendered)
    server = container(docs, "vault")
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in one(docs, "Deployment", "vault")["spec"]["template"]["spec"]["volumes"]}
    for key, file in (("tls_cert_file", "tls.crt"), ("tls_key_file", "tls.key")):
        path = Path(_hcl_value(text, key))
        assert path.name == file
        secret_name = volumes[mounts[str(path.parent)]["name"]]["secret"]["secretName"]
        assert file in one(docs, "Secret", secret_name)["data"]
    assert _hcl_value(text, "tls_min_version") in {"tls12", "tls13"}
    assert _hcl_value(text, "address").endswith(":8200")


def test_vault_has_a_file_audit_device_on_a_writable_volume(rendered: dict[str, list[Doc]]) -> None:
    """A file audit device, writing into an emptyDir (the root filesystem is read-only)."""
    docs = rendered["vault"]
    text = _vault_config(rendered)
    assert re.search(r'^audit\s+"file"\s+"[a-z-]+"\s*\{', text, re.MULTILINE)
    audit_path = Path(_hcl_value(text, "file_path"))
    server = container(docs, "vault")
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in one(docs, "Deployment", "vault")["spec"]["template"]["spec"]["volumes"]}
    mount = mounts[str(audit_path.parent)]
    assert "emptyDir" in volumes[mount["name"]] and not mount.get("readOnly")


def test_vault_token_reviewer_is_bound_to_auth_delegator(rendered: dict[str, list[Doc]]) -> None:
    """The token-reviewer ServiceAccount may create TokenReviews (system:auth-delegator); Vault runs as it."""
    docs = rendered["vault"]
    account = one(docs, "ServiceAccount", "vault-token-reviewer")
    binding = one(docs, "ClusterRoleBinding", "vault-token-reviewer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "vault-token-reviewer",
            "namespace": account["metadata"]["namespace"],
        }
    ]
    pod = one(docs, "Deployment", "vault")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vault-token-reviewer"


def test_vault_ingress_is_open_to_workers_only(rendered: dict[str, list[Doc]], config: Config) -> None:
    """Vault's namespace denies ingress; vault-ingress opens 8200 to worker pods of bound namespaces."""
    docs = rendered["vault"]
    vault_labels = one(docs, "Deployment", "vault")["spec"]["template"]["metadata"]["labels"]
    policies = find(docs, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] for p in policies)
    policy = one(docs, "NetworkPolicy", "vault-ingress")
    assert selector_matches(policy["spec"]["podSelector"], vault_labels)
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8200}]
    (peer,) = rule["from"]
    worker_ns = namespace_labels(WORKER_NAMESPACE, **{c.LABEL_ENV: "prod"})
    assert selector_matches(peer["namespaceSelector"], worker_ns)
    assert not selector_matches(peer["namespaceSelector"], namespace_labels("default"))
    assert selector_matches(peer["podSelector"], dict(config.selectors.worker))
    assert not selector_matches(peer["podSelector"], dict(config.selectors.router))
    # Without vault-ingress nothing reaches Vault: the e2e suite's "networking gap" relies on it.
    without = [
        p for p in docs if not (p["kind"] == "NetworkPolicy" and p["metadata"]["name"] == "vault-ingress")
    ]
    assert allowed(without, vault_labels, "Ingress") == (True, set())


def test_config_vault_addr_is_the_demo_vault_service(rendered: dict[str, list[Doc]], config: Config) -> None:
    """Every Vault environment of the example config points at https://vault.vault.svc:8200, the Service."""
    service = one(rendered["vault"], "Service", "vault")
    (port,) = service["spec"]["ports"]
    expected = f"https://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port['port']}"
    vault_envs = [env for env in config.environments.values() if env.uses_vault]
    assert vault_envs
    for env in vault_envs:
        assert env.vault is not None and env.vault.addr == expected


def test_example_namespace_has_the_vault_ca_config_map(
    rendered: dict[str, list[Doc]], config: Config
) -> None:
    """Every caConfigMap of the config exists in the example worker namespace, under its exact name (the
    patch names it: no hash suffix), with the key holding the CA that signs the demo Vault's certificate."""
    vault_ca = base64.b64decode(one(rendered["vault"], "Secret", "vault-tls")["data"]["ca.crt"]).decode()
    configured = [env.vault.ca_config_map for env in config.environments.values() if env.vault]
    with_ca = [ca for ca in configured if ca is not None]
    assert with_ca, "the example config shows caConfigMap"
    for ca in with_ca:
        config_map = one(_example(rendered), "ConfigMap", ca.name)
        assert config_map["metadata"]["namespace"] == WORKER_NAMESPACE
        assert config_map["data"][ca.key] == vault_ca
    assert find(rendered["worker-namespace"], "ConfigMap") == []  # the component stays CA-agnostic


# --- the example worker: what an unchanged deployer writes --------------------------------------------------


def test_example_worker_is_an_unchanged_deployment(rendered: dict[str, list[Doc]], config: Config) -> None:
    """No ServiceAccount, no Vault settings, no Secret: only the worker label and a secret:// reference."""
    deployment = one(_example(rendered), "Deployment", "demo-worker")
    pod = deployment["spec"]["template"]
    assert selector_matches({"matchLabels": dict(config.selectors.worker)}, pod["metadata"]["labels"])
    assert "serviceAccountName" not in pod["spec"] and "serviceAccount" not in pod["spec"]
    (worker,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env == {"WEBHOOK_SECRET": {"name": "WEBHOOK_SECRET", "value": "secret://webhook/inbound"}}
    assert "envFrom" not in worker and "volumes" not in pod["spec"]


def test_example_worker_is_admitted_and_patched(rendered: dict[str, list[Doc]], config: Config) -> None:
    """gtc-admission's own decision: the Deployment is admitted, its pod is put on gtc-worker and Vault."""
    deployment = one(_example(rendered), "Deployment", "demo-worker")
    result = review_text(yaml.safe_dump(deployment), config=config, namespace=WORKER_NAMESPACE)
    assert result.allowed, result.review
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**deployment["spec"]["template"]["metadata"], "generateName": "demo-worker-"},
        "spec": deployment["spec"]["template"]["spec"],
    }
    result = review_text(yaml.safe_dump(pod), config=config, namespace=WORKER_NAMESPACE)
    assert result.allowed, result.review
    patch = base64.b64decode(result.review["response"]["patch"]).decode()
    assert '"/spec/serviceAccountName","value":"gtc-worker"' in patch
    assert "VAULT_ADDR" in patch
    # The CA source names the ConfigMap the example namespace ships (test above), not optional.
    (volumes,) = [op["value"] for op in json.loads(patch) if op["path"] == "/spec/volumes"]
    (ca_source,) = [s["configMap"] for s in volumes[0]["projected"]["sources"] if "configMap" in s]
    one(_example(rendered), "ConfigMap", ca_source["name"])
    assert "optional" not in ca_source


def test_worker_image_entrypoint_boots_through_gtc_secrets(rendered: dict[str, list[Doc]]) -> None:
    """The worker image runs the demo worker under `gtc-secrets exec --watch`, as the user the example pod
    sets."""
    entrypoint = _dockerfile_instruction("worker.Dockerfile", "ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == [
        "gtc-secrets",
        "exec",
        "--watch",
        "1m",
        "--",
        "python",
        "-m",
        "gtc_secrets.demo_worker",
    ]
    assert (ROOT / "runtime" / "gtc_secrets" / "demo_worker.py").is_file()
    pod = one(_example(rendered), "Deployment", "demo-worker")["spec"]["template"]["spec"]
    assert _dockerfile_user("worker.Dockerfile") == f"{pod['securityContext']['runAsUser']}:{NON_ROOT_UID}"


# --- Dockerfiles --------------------------------------------------------------------------------------------


def _dockerfile(name: str) -> str:
    return (DEPLOY / "docker" / name).read_text(encoding="utf-8").replace("\\\n", " ")


def _dockerfile_instruction(name: str, instruction: str) -> str:
    values = re.findall(rf"^{instruction}\s+(.+)$", _dockerfile(name), re.MULTILINE)
    assert values, f"{name}: no {instruction}"
    return str(values[-1]).strip()


def _dockerfile_user(name: str) -> str:
    return _dockerfile_instruction(name, "USER")


@pytest.mark.parametrize("name", ["webhook.Dockerfile", "worker.Dockerfile"])
def test_dockerfiles_are_multi_stage_slim_and_non_root(name: str) -> None:
    """python:3.11-slim, a wheel-building stage, and a final USER that is not root."""
    text = _dockerfile(name)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(stages) == 2 and all(stage == "${PYTHON_IMAGE}" for stage in stages)
    assert "pip wheel" in text and "--no-index" in text
    user = _dockerfile_user(name)
    assert user.split(":")[0] not in {"0", "root"}
    # USER comes after every RUN: nothing of the final image runs as root at run time.
    assert text.rindex("\nUSER ") > text.rindex("\nRUN ")


@pytest.mark.parametrize("name", ["webhook.Dockerfile", "worker.Dockerfile"])
def test_docker_build_context_holds_what_the_wheel_needs(name: str) -> None:
    """The per-Dockerfile .dockerignore lets through exactly the files the COPY lines name."""
    ignore = (DEPLOY / "docker" / f"{name}.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed_paths = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        part.rstrip("/")
        for args in re.findall(r"^COPY\s+(?!--from)(.+)$", _dockerfile(name), re.MULTILINE)
        for part in shlex.split(args)[:-1]
    }
    assert copied == allowed_paths == {"pyproject.toml", "README.md", "webhook", "runtime"}


def _verifies(bundle: bytes, leaf_pem: bytes) -> bool:
    verifier = (
        PolicyBuilder()
        .store(Store(x509.load_pem_x509_certificates(bundle)))
        .build_server_verifier(x509.DNSName(SERVICE_DNS))
    )
    try:
        verifier.verify(x509.load_pem_x509_certificate(leaf_pem), [])
    except x509.verification.VerificationError:
        return False
    return True


def test_rotation_steps_of_certs_readme_keep_both_leaves_trusted(tmp_path: Path) -> None:
    """certs/README.md's rotation, rendered: old+new CA trusts both leaves; the end state only the new one."""
    if KUBECTL is None:
        pytest.skip("kubectl not installed: cannot render the kustomizations (kubectl kustomize)")
    root = tmp_path / "deploy"
    shutil.copytree(DEPLOY, root)
    tls = root / "overlays" / "self-managed-ca" / "tls"
    names = [SERVICE_DNS, f"{SERVICE_DNS}.cluster.local"]
    old, new = generate_certificates(names), generate_certificates(names)
    write_certificates(old, tls)

    def bundles() -> list[bytes]:
        docs = kustomize(root / "overlays" / "self-managed-ca")
        return [base64.b64decode(w["clientConfig"]["caBundle"]) for _, w in webhook_configs(docs)]

    # Step 1: both CAs in ca.crt, the old leaf still served.
    (tls / "ca.crt").write_bytes(old.ca_cert_pem + new.ca_cert_pem)
    for bundle in bundles():
        assert _verifies(bundle, old.cert_pem) and _verifies(bundle, new.cert_pem)
    # Step 4: only the new CA.
    (tls / "ca.crt").write_bytes(new.ca_cert_pem)
    for bundle in bundles():
        assert _verifies(bundle, new.cert_pem) and not _verifies(bundle, old.cert_pem)
