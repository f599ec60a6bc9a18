"""``gtc-admission audit``: what already runs in the cluster, judged by the webhook's own rules.

The webhook only sees new requests; a cluster that ran the old deployer before it was installed keeps its
``gtc-dev-secrets`` Secrets and its workers on the dev store. The audit reads every bound namespace through a
``ClusterReader`` (``cluster_api.KubernetesCluster`` in production) and reports, per namespace:

- Secrets named in ``forbiddenSecrets`` where the environment uses Vault (``dev-secret-object``, the
  webhook's own rule), read as metadata only: the reader never asks for a Secret's data;
- Pods and workload controllers judged by ``offline.review_document``: one object as ``/mutate`` then
  ``/validate`` would judge it if it were created now. A ReplicaSet owned by a Deployment and a Job owned by
  a CronJob are not judged apart: their owner is, once, and their pods are reported with that owner;
- worker pods that run without the Vault patch (``not-on-vault``), with their owning workload and what to
  do: restart them, and the webhook patches the new pods.

Judging is pure (``rule_findings``, ``not_on_vault``, ``restart_action``); ``audit_cluster`` drives the
reader namespace by namespace and yields one ``NamespaceAudit`` at a time, so memory holds one
namespace's findings and one list page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from gtc_admission import constants as c
from gtc_admission.bindings import BindingSource, LayeredBindings, StaticBindings
from gtc_admission.cluster_api import (
    CRON_JOB,
    DAEMON_SET,
    DEPLOYMENT,
    JOB,
    POD,
    REPLICA_SET,
    SECRET,
    STATEFUL_SET,
    Kind,
)
from gtc_admission.config import Config, Environment, NamespaceBinding
from gtc_admission.namespace_cache import binding_from_labels
from gtc_admission.offline import OfflineResult, ReviewInputError, review_document
from gtc_admission.policy import carried_api_token

log = logging.getLogger(__name__)

Result = Literal["fail", "warn", "error"]
Severity = Literal["high", "medium", "low"]

# Controllers judged as templates, in this order: owners before what they own, so that a ReplicaSet or a
# Job can be attributed to its Deployment or CronJob, and pods after all of them.
WORKLOAD_KINDS: Final = (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, CRON_JOB, REPLICA_SET, JOB)
# (owned kind, owner kind): the owned object is reported through its owner, never on its own.
REPORTED_THROUGH_OWNER: Final = frozenset({("ReplicaSet", "Deployment"), ("Job", "CronJob")})
# Pods that ended hold no process and read no secret any more: not listed at all.
RUNNING_PODS: Final = "status.phase!=Succeeded,status.phase!=Failed"
# Rules that never deny (the webhook only warns): a PolicyReport "warn" whatever the enforcement.
ADVISORY_RULES: Final = frozenset({c.RULE_VAULT_SETTINGS_OVERRIDE})
# How bad each finding is for "no secret value in the cluster": values in the cluster, or a worker that
# would read them, are high.
SEVERITIES: Final[Mapping[str, Severity]] = {
    c.RULE_DEV_SECRET_OBJECT: "high",
    c.RULE_DEV_SECRET_REFERENCE: "high",
    c.AUDIT_RULE_NOT_ON_VAULT: "high",
    c.RULE_WORKER_SERVICE_ACCOUNT: "high",
    c.RULE_TENANT_MISMATCH: "high",
    c.RULE_WORKER_API_TOKEN: "high",
    c.RULE_VAULT_SETTINGS_OVERRIDE: "low",
}
DEFAULT_SEVERITY: Final[Severity] = "medium"
README_SEEDING: Final = 'README "Seeding secrets (put)"'
# What to change in the object (or its owner) for each rule the webhook's policy can fire.
ACTIONS: Final[Mapping[str, str]] = {
    c.RULE_DEV_SECRET_REFERENCE: "drop the reference; put the values into Vault with gtc-secrets put "
    f"and read them as secret:// references ({README_SEEDING})",
    c.RULE_WORKER_SERVICE_ACCOUNT: "remove serviceAccountName (the webhook sets the workers' own)",
    c.RULE_TENANT_MISMATCH: "remove GREENTIC_ENV/TENANT/TEAM from the spec (the webhook sets them)",
    c.RULE_ROUTER_BADGE: "run the router under its own ServiceAccount",
    c.RULE_WORKER_API_TOKEN: "drop automountServiceAccountToken: true (a worker needs no API token)",
    c.RULE_VAULT_SETTINGS_OVERRIDE: "remove the setting (the webhook sets it)",
    c.RULE_UNKNOWN_SECRETS_PACK: "bind the namespace to a configured environment with a known pack",
    c.RULE_INVALID_OBJECT: "fix the field named in the message",
}


class ClusterReader(Protocol):
    """What the audit needs from the cluster; ``cluster_api.KubernetesCluster`` is the real one."""

    def namespaces(self) -> Iterator[Mapping[str, Any]]: ...

    def objects(
        self, kind: Kind, namespace: str, *, field_selector: str | None = None
    ) -> Iterator[Mapping[str, Any]]: ...

    def secret_metadata(self, namespace: str, name: str) -> Iterator[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str = ""

    @property
    def shown(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class AuditFinding:
    """One problem of one object. ``message`` and ``action`` name fields and objects, never values."""

    resource: ObjectRef
    rule: str
    message: str
    result: Result
    severity: Severity
    action: str = ""  # what to do about it
    owner: ObjectRef | None = None  # the workload that owns a pod


@dataclass(frozen=True)
class NamespaceAudit:
    namespace: str
    binding: NamespaceBinding
    enforcement: str | None
    checked: int  # objects judged (Secrets found, workloads, running pods)
    findings: tuple[AuditFinding, ...]

    @property
    def passed(self) -> int:
        """Objects judged that have no finding."""
        return self.checked - len({(f.resource.kind, f.resource.name) for f in self.findings})


class NamespaceNotFound(LookupError):
    """``--namespace`` names a namespace the cluster does not have (CLI exit 2)."""


# ---------------------------------------------------------------------------------------------
# Pure: what a finding says and what to do about it.
# ---------------------------------------------------------------------------------------------


def result_for(rule: str, enforcement: str | None) -> Result:
    """fail where the webhook would refuse it now, warn where it only warns (warn, dryrun, advisory)."""
    if rule == c.RULE_INTERNAL_ERROR:
        return "error"
    if rule in ADVISORY_RULES or enforcement in ("warn", "dryrun"):
        return "warn"
    return "fail"


def severity_of(rule: str) -> Severity:
    return SEVERITIES.get(rule, DEFAULT_SEVERITY)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def object_ref(obj: Mapping[str, Any], kind: Kind, namespace: str) -> ObjectRef:
    meta = _meta(obj)
    return ObjectRef(kind.api_version, kind.kind, _text(meta.get("name")), namespace, _text(meta.get("uid")))


def controller_of(obj: Mapping[str, Any], namespace: str) -> ObjectRef | None:
    """The ownerReference marked ``controller: true`` (the one that creates and replaces the object)."""
    references = _meta(obj).get("ownerReferences")
    for reference in references if isinstance(references, list) else ():
        if isinstance(reference, dict) and reference.get("controller") is True:
            return ObjectRef(
                _text(reference.get("apiVersion")),
                _text(reference.get("kind")),
                _text(reference.get("name")),
                namespace,
                _text(reference.get("uid")),
            )
    return None


def _split_message(line: str) -> tuple[str, str]:
    """An audit-record message ``[rule-id] text`` -> (rule-id, text)."""
    if line.startswith("["):
        rule, sep, text = line[1:].partition("] ")
        if sep:
            return rule, text
    return c.RULE_INTERNAL_ERROR, line


def _review(
    obj: Mapping[str, Any], kind: Kind, namespace: str, config: Config, bindings: BindingSource
) -> OfflineResult | str:
    """review_document on a listed object (list items carry no kind/apiVersion); the error text if it
    cannot be judged at all."""
    document = {**obj, "apiVersion": kind.api_version, "kind": kind.kind}
    try:
        return review_document(document, config=config, bindings=bindings, namespace=namespace)
    except ReviewInputError as exc:
        return str(exc)
    except Exception as exc:  # one odd object must not end the audit of the cluster
        return f"internal error while judging it ({type(exc).__name__})"


def rule_findings(
    result: OfflineResult | str,
    resource: ObjectRef,
    *,
    enforcement: str | None,
    owner: ObjectRef | None = None,
    skip_rules: frozenset[str] = frozenset(),
) -> list[AuditFinding]:
    """The findings of one review, one per message of its audit record (rules in ``skip_rules`` left out)."""
    if isinstance(result, str):
        rule = c.RULE_INTERNAL_ERROR
        return [AuditFinding(resource, rule, result, "error", severity_of(rule), owner=owner)]
    target = owner or resource
    findings = []
    for line in result.audit["messages"]:
        rule, message = _split_message(line)
        if rule in skip_rules:
            continue
        action = _action(rule, target)
        findings.append(
            AuditFinding(
                resource, rule, message, result_for(rule, enforcement), severity_of(rule), action, owner
            )
        )
    return findings


def _action(rule: str, target: ObjectRef) -> str:
    if rule == c.RULE_DEV_SECRET_OBJECT:
        return (
            f"seed each value into Vault with gtc-secrets put ({README_SEEDING}), "
            f"then kubectl -n {target.namespace} delete secret {target.name}"
        )
    return f"in {target.shown}: {ACTIONS.get(rule, 'fix what the message names')}"


def restart_action(owner: ObjectRef | None, pod: ObjectRef) -> str:
    """How to get a new pod the webhook patches, for this pod's owner."""
    ns = pod.namespace
    if owner is None:
        return f"re-create the pod: kubectl -n {ns} delete pod {pod.name}, then apply it again"
    if owner.kind in ("Deployment", "StatefulSet", "DaemonSet"):
        return f"kubectl -n {ns} rollout restart {owner.kind.lower()}/{owner.name}"
    if owner.kind == "CronJob":
        return (
            f"the next run of cronjob/{owner.name} is patched; "
            f"to replace this one: kubectl -n {ns} delete pod {pod.name}"
        )
    if owner.kind in ("ReplicaSet", "Job"):
        return (
            f"kubectl -n {ns} delete pod {pod.name} ({owner.kind.lower()}/{owner.name} creates a patched one)"
        )
    return f"restart it through its owner {owner.shown}: the webhook patches the new pods"


def _vault_worker(result: OfflineResult | str, config: Config) -> Environment | None:
    """The environment of a judged worker, when it uses Vault (the audit's pod findings apply)."""
    if isinstance(result, str) or result.audit.get("component") != c.COMPONENT_WORKER:
        return None
    env_name = result.audit.get("env")
    env = config.environments.get(env_name) if isinstance(env_name, str) else None
    return env if env is not None and env.uses_vault else None


def not_on_vault(
    pod: Mapping[str, Any],
    result: OfflineResult | str,
    ref: ObjectRef,
    owner: ObjectRef | None,
    config: Config,
) -> AuditFinding | None:
    """A worker pod in a Vault environment that the webhook has not patched (or would patch differently
    now): it runs on the dev store, or with stale Vault settings, until it is replaced."""
    env = _vault_worker(result, config)
    if env is None:
        return None
    assert not isinstance(result, str)  # _vault_worker saw to it
    annotations = _meta(pod).get("annotations")
    marker = annotations.get(c.ANNOTATION_SECRETS_BACKEND) if isinstance(annotations, dict) else None
    patched: list[str] = result.audit["patched"]
    if marker == c.BACKEND_VAULT and not patched:
        return None
    owned = f" (owned by {owner.shown})" if owner is not None else ""
    if marker != c.BACKEND_VAULT:
        what = (
            f"worker pod {ref.name}{owned} runs without the Vault patch (created before the webhook, "
            "or the webhook was skipped): it reads the dev store"
        )
    else:
        changed = ", ".join(dict.fromkeys(patched))
        what = (
            f"worker pod {ref.name}{owned} differs from what the webhook makes of a worker now "
            f"(an older webhook or config; a new pod would change {changed})"
        )
    action = restart_action(owner, ref)
    if not result.allowed:
        what += "; a new pod would be refused as it is"
        action = f"first fix what {(owner or ref).shown} is refused for, then: {action}"
    rule = c.AUDIT_RULE_NOT_ON_VAULT
    return AuditFinding(ref, rule, what, result_for(rule, env.enforcement), severity_of(rule), action, owner)


def api_token_as_it_runs(
    pod: Mapping[str, Any],
    result: OfflineResult | str,
    ref: ObjectRef,
    owner: ObjectRef | None,
    config: Config,
) -> AuditFinding | None:
    """worker-api-token on a worker the webhook patched (an older one, before it removed the token), as
    it runs: judging it as re-created (``result``) shows only that a new pod would lose the token, so the
    token this pod still holds is named here, by its rule. An unpatched worker is not-on-vault already."""
    env = _vault_worker(result, config)
    annotations = _meta(pod).get("annotations")
    if not isinstance(annotations, dict) or annotations.get(c.ANNOTATION_SECRETS_BACKEND) != c.BACKEND_VAULT:
        return None
    spec = pod.get("spec")
    finding = carried_api_token(spec) if env is not None and isinstance(spec, dict) else None
    if env is None or finding is None:
        return None
    rule = finding.rule
    action = f"{restart_action(owner, ref)} (the webhook now removes the API token from new workers)"
    verdict = result_for(rule, env.enforcement)
    return AuditFinding(ref, rule, finding.message, verdict, severity_of(rule), action, owner)


# ---------------------------------------------------------------------------------------------
# Driving the reader, one namespace at a time.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Owners:
    """Per namespace: which ReplicaSets/Jobs report through a Deployment/CronJob, and the rules that fired
    on every judged workload (a pod's finding its owner already has is not repeated)."""

    through: dict[tuple[str, str], ObjectRef] = field(default_factory=dict)
    rules: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def top(self, ref: ObjectRef | None) -> ObjectRef | None:
        if ref is None:
            return None
        return self.through.get((ref.kind, ref.name), ref)


def audit_namespace(
    reader: ClusterReader,
    namespace: str,
    binding: NamespaceBinding,
    config: Config,
    bindings: BindingSource,
) -> NamespaceAudit:
    """Every Secret named in forbiddenSecrets, every workload and every running pod of one namespace."""
    env = config.environments.get(binding.env)
    enforcement = env.enforcement if env is not None else None
    findings: list[AuditFinding] = []
    checked = 0
    for name in sorted(config.forbidden_secrets):
        for secret in reader.secret_metadata(namespace, name):
            checked += 1
            # Judged by the webhook's own rule (dev-secret-object) on the metadata: the rule reads the
            # name only, and the reader never hands out anything else of a Secret.
            result = _review({"metadata": _meta(secret)}, SECRET, namespace, config, bindings)
            findings.extend(
                rule_findings(result, object_ref(secret, SECRET, namespace), enforcement=enforcement)
            )
    owners = _Owners()
    for kind in WORKLOAD_KINDS:
        for obj in reader.objects(kind, namespace):
            ref = object_ref(obj, kind, namespace)
            controller = controller_of(obj, namespace)
            if controller is not None and (kind.kind, controller.kind) in REPORTED_THROUGH_OWNER:
                owners.through[(kind.kind, ref.name)] = controller
                continue
            checked += 1
            fired = rule_findings(
                _review(obj, kind, namespace, config, bindings), ref, enforcement=enforcement
            )
            owners.rules[(kind.kind, ref.name)] = frozenset(f.rule for f in fired)
            findings.extend(fired)
    for pod in reader.objects(POD, namespace, field_selector=RUNNING_PODS):
        checked += 1
        ref = object_ref(pod, POD, namespace)
        owner = owners.top(controller_of(pod, namespace))
        result = _review(pod, POD, namespace, config, bindings)
        reported = (
            owners.rules.get((owner.kind, owner.name), frozenset()) if owner is not None else frozenset()
        )
        findings.extend(rule_findings(result, ref, enforcement=enforcement, owner=owner, skip_rules=reported))
        stale = not_on_vault(pod, result, ref, owner, config)
        if stale is not None:
            findings.append(stale)
        token = api_token_as_it_runs(pod, result, ref, owner, config)
        if token is not None:
            findings.append(token)
    return NamespaceAudit(namespace, binding, enforcement, checked, tuple(findings))


def _audited(binding: NamespaceBinding, config: Config) -> bool:
    """Every bound namespace except those of a dev-store environment, where no rule applies."""
    env = config.environments.get(binding.env)
    return env is None or env.uses_vault or not env.pack_is_known


@dataclass(frozen=True)
class ClusterBindings:
    present: frozenset[str]  # every namespace of the cluster
    bound: Mapping[str, NamespaceBinding]  # those bound to an environment
    source: BindingSource  # what the rules judge with: static bindings first, then labels
    # Namespaces whose greentic.ai/* labels are there but do not bind (why, by label key): not audited.
    problems: Mapping[str, str] = field(default_factory=dict)


def bound_namespaces(namespaces: Iterable[Mapping[str, Any]], config: Config) -> ClusterBindings:
    """The cluster's namespaces and their bindings, as the webhook sees them: the config's static
    bindings first, then the greentic.ai/* labels (namespace_cache's reading of them)."""
    labelled: dict[str, NamespaceBinding] = {}
    problems: dict[str, str] = {}
    present: set[str] = set()
    for namespace in namespaces:
        meta = _meta(namespace)
        name = _text(meta.get("name"))
        if not name:
            continue
        present.add(name)
        labels = meta.get("labels")
        read = binding_from_labels(labels if isinstance(labels, dict) else {})
        if read.binding is not None:
            labelled[name] = read.binding
        elif read.problem is not None and name not in config.namespaces:
            problems[name] = read.problem
    source = LayeredBindings([StaticBindings(config.namespaces), StaticBindings(labelled)])
    bound = {}
    for name in present:
        lookup = source.lookup(name)
        if isinstance(lookup, NamespaceBinding):
            bound[name] = lookup
    return ClusterBindings(frozenset(present), bound, source, problems)


def audit_cluster(
    reader: ClusterReader, config: Config, *, namespace: str | None = None
) -> Iterator[NamespaceAudit]:
    """Audit every bound namespace (or only ``namespace``), in name order, one at a time.

    NamespaceNotFound when ``namespace`` is not in the cluster; an unbound one yields nothing."""
    cluster = bound_namespaces(reader.namespaces(), config)
    for name, problem in sorted(cluster.problems.items()):
        if namespace in (None, name):
            # Label keys only, never values: a namespace meant to be bound that the audit cannot read.
            log.warning("namespace %s is not audited: %s", name, problem)
    if namespace is not None and namespace not in cluster.present:
        raise NamespaceNotFound(f"namespace {namespace} not found in the cluster")
    targets = [namespace] if namespace is not None else sorted(cluster.bound)
    for name in targets:
        binding = cluster.bound.get(name)
        if binding is not None and _audited(binding, config):
            yield audit_namespace(reader, name, binding, config, cluster.source)
