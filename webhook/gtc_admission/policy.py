"""The admission rules, pure: a parsed review, the config and a binding source in; a ``Verdict`` out.

No I/O and no knowledge of HTTP. ``judge`` decides which object is under review (a Pod, or the pod template
of a workload controller), which namespace binding applies, what the worker mutation is (planned by
``worker_mutation.py``), and which rules fire on the object as it will be (``/mutate``, controllers) or as
it was sent (``/validate`` of a Pod). This module holds the rules and their findings: the deny rules on a
pod, vault-settings-override from the planned mutation, and the findings not about the pod's content.
``admission.py`` turns the verdict into the AdmissionReview response and the audit record.

Messages and warnings name fields, containers and variables, never a value from the object: env values
and secret contents must not reach logs, audit lines or the client. The object is read, and names taken
from it are shown, only through ``object_reader.py``, because the object may not come from the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gtc_admission import constants as c
from gtc_admission.api_token import api_access_volumes
from gtc_admission.bindings import BindingSource
from gtc_admission.config import Config, Enforcement, Environment, NamespaceBinding, Selectors
from gtc_admission.object_reader import (
    InvalidObject,
    container_name,
    effective_service_account,
    field_path,
    metadata_of,
    object_list,
    optional_object,
    optional_string,
    required_object,
    short_warning,
    show,
    spec_of,
)
from gtc_admission.patch import Edit
from gtc_admission.review import ReviewRequest
from gtc_admission.worker_mutation import (
    AS_SENT,
    POD_CONTAINER_LISTS,
    EnvIndex,
    Override,
    WorkerPlan,
    WorkerSettings,
    plan_worker,
    worker_settings,
)

Component = Literal["worker", "router", "other"]

# Workload controllers whose pod template is judged, by (API group, kind): the path to the template.
CONTROLLER_TEMPLATES: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}
# The field-path prefix of each judged part in messages: "" for a Pod, "spec.template." for a Deployment.
_PREFIXES: Final[Mapping[tuple[str, ...], str]] = {
    path: "".join(f"{key}." for key in path) for path in ((), *CONTROLLER_TEMPLATES.values())
}
ALL_CONTAINER_LISTS: Final = ("containers", "initContainers", "ephemeralContainers")
SUBRESOURCE_EPHEMERAL: Final = "ephemeralcontainers"


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired. ``blocking`` findings deny (subject to enforcement); the others only warn."""

    rule: str
    message: str  # full text for the denial status and the audit line; names fields, never values
    warning: str  # short ASCII form for an admission warning
    blocking: bool = True
    code: int = 403


@dataclass(frozen=True, slots=True)
class Verdict:
    findings: tuple[Finding, ...] = ()
    edits: tuple[Edit, ...] = ()  # the patch; only for a Pod on CREATE through /mutate
    component: Component | None = None  # None: no pod or pod template was looked at
    binding: NamespaceBinding | None = None
    enforcement: Enforcement | None = None  # None: no environment applies, blocking findings deny


def being_deleted(obj: Mapping[str, Any]) -> bool:
    metadata = obj.get("metadata")
    return isinstance(metadata, dict) and bool(metadata.get("deletionTimestamp"))


def classify(labels: Mapping[str, Any], selectors: Selectors) -> Component:
    """matchLabels semantics. A pod matching both selectors is a worker: it then gets every worker rule."""
    if _matches(labels, selectors.worker):
        return c.COMPONENT_WORKER
    if _matches(labels, selectors.router):
        return c.COMPONENT_ROUTER
    return c.COMPONENT_OTHER


def _matches(labels: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    # A loop, not all(<generator>): this runs twice per review, and a generator costs more than the test.
    for key, value in selector.items():  # noqa: SIM110
        if labels.get(key) != value:
            return False
    return True


# --- dev-secret-reference ----------------------------------------------------------------------------


def forbidden_references(
    spec: Mapping[str, Any],
    forbidden: frozenset[str],
    prefix: str,
    *,
    replaced_env: frozenset[EnvIndex] = frozenset(),
    replaced_volumes: frozenset[int] = frozenset(),
) -> list[tuple[str, str]]:
    """Every place the pod spec names a forbidden Secret, as (field path, secret name), in document order.

    Env entries and volumes that the worker patch replaces are skipped: after the patch they are ours.
    """
    found: list[tuple[str, str]] = []
    if not forbidden:
        return found

    def check(value: object, *path: object) -> None:
        name = optional_string(value, *path)
        if name is not None and name in forbidden:
            found.append((field_path(path), name))

    # The "is not None" guards keep the common case (no valueFrom, no secret volume) free of calls.
    for list_name in ALL_CONTAINER_LISTS:
        listed = spec.get(list_name)
        if listed is None:
            continue
        for ci, container in enumerate(object_list(listed, prefix, "spec.", list_name)):
            at = (prefix, "spec.", list_name, "[", ci, "]")
            env = container.get("env")
            if env is not None:
                for ei, entry in enumerate(object_list(env, *at, ".env")):
                    value_from = entry.get("valueFrom")
                    if value_from is None or (replaced_env and (list_name, ci, ei) in replaced_env):
                        continue
                    where = (*at, ".env[", ei, "].valueFrom")
                    ref = optional_object(
                        required_object(value_from, *where).get("secretKeyRef"), *where, ".secretKeyRef"
                    )
                    if ref is not None:
                        check(ref.get("name"), *where, ".secretKeyRef.name")
            env_from = container.get("envFrom")
            if env_from is not None:
                for fi, source in enumerate(object_list(env_from, *at, ".envFrom")):
                    secret_ref = source.get("secretRef")
                    if secret_ref is not None:
                        ref = required_object(secret_ref, *at, ".envFrom[", fi, "].secretRef")
                        check(ref.get("name"), *at, ".envFrom[", fi, "].secretRef.name")
    volumes = spec.get("volumes")
    if volumes is not None:
        for vi, volume in enumerate(object_list(volumes, prefix, "spec.volumes")):
            secret = volume.get("secret")
            projected = volume.get("projected")
            if (secret is None and projected is None) or vi in replaced_volumes:
                continue
            vat = (prefix, "spec.volumes[", vi, "]")
            if secret is not None:
                check(required_object(secret, *vat, ".secret").get("secretName"), *vat, ".secret.secretName")
            if projected is not None:
                sources = required_object(projected, *vat, ".projected").get("sources")
                for si, source in enumerate(object_list(sources, *vat, ".projected.sources")):
                    ref = optional_object(source.get("secret"), *vat, ".projected.sources[", si, "].secret")
                    if ref is not None:
                        check(ref.get("name"), *vat, ".projected.sources[", si, "].secret.name")
    return found


def _dev_secret_finding(refs: list[tuple[str, str]]) -> Finding:
    names = ", ".join(sorted({name for _, name in refs}))
    paths = [path for path, _ in refs]
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return Finding(
        rule=c.RULE_DEV_SECRET_REFERENCE,
        message=f"references forbidden Secret {names} at {', '.join(paths)}",
        warning=short_warning(c.RULE_DEV_SECRET_REFERENCE, f"{names} referenced at {paths[0]}{more}"),
    )


# --- vault-settings-override: what the worker mutation replaces ------------------------------------------


def _override_finding(override: Override, phase: Literal["mutate", "validate", "template"]) -> Finding:
    if override.removed:
        outcome = {"mutate": "removed", "validate": "is not allowed", "template": "will be removed"}[phase]
    else:
        outcome = {
            "mutate": "replaced with the configured value",
            "validate": "differs from the configured value",
            "template": "will be replaced with the configured value",
        }[phase]
    subject = f"container {override.container}: {override.what}" if override.container else override.what
    return Finding(
        rule=c.RULE_VAULT_SETTINGS_OVERRIDE,
        message=f"{subject} {outcome} ({override.where})",
        warning=short_warning(c.RULE_VAULT_SETTINGS_OVERRIDE, f"{subject} {outcome}"),
        blocking=False,
    )


# --- Deny rules on the judged pod -------------------------------------------------------------------------


def deny_rules(
    root: Mapping[str, Any],
    prefix: str,
    component: Component,
    config: Config,
    settings: WorkerSettings | None,
    *,
    validating_pod: bool,
    planned: WorkerPlan = AS_SENT,
) -> list[Finding]:
    """The deny rules on one pod (or template): dev-secret-reference, worker-service-account,
    tenant-mismatch, worker-api-token, router-badge; on the pod as it will be after the ``planned`` worker
    patch."""
    spec = spec_of(root, prefix)
    findings: list[Finding] = []
    refs = forbidden_references(
        spec,
        config.forbidden_secrets,
        prefix,
        replaced_env=planned.replaced_env,
        replaced_volumes=planned.replaced_volumes,
    )
    if refs:
        findings.append(_dev_secret_finding(refs))
    badge = config.service_account
    if component == c.COMPONENT_WORKER:
        effective, _ = effective_service_account(spec, prefix)
        if planned.service_account is not None:
            effective = planned.service_account
        if effective != badge:
            shown = show(effective) if effective else "(none)"
            hint = (
                " (was the mutating webhook skipped?)"
                if validating_pod and effective in ("", c.DEFAULT_SERVICE_ACCOUNT)
                else ""
            )
            findings.append(
                Finding(
                    rule=c.RULE_WORKER_SERVICE_ACCOUNT,
                    message=f"a worker must run as ServiceAccount {badge}, not {shown}{hint}",
                    warning=short_warning(
                        c.RULE_WORKER_SERVICE_ACCOUNT, f"a worker must run as {badge}, not {shown}"
                    ),
                )
            )
        if settings is not None:
            findings.extend(_tenant_mismatches(spec, prefix, settings))
            findings.extend(_api_token_findings(spec, prefix, planned))
    elif component == c.COMPONENT_ROUTER:
        effective, _ = effective_service_account(spec, prefix)
        if effective == badge:
            findings.append(
                Finding(
                    rule=c.RULE_ROUTER_BADGE,
                    message=f"the router must not run as ServiceAccount {badge} (the worker's badge)",
                    warning=short_warning(c.RULE_ROUTER_BADGE, f"the router must not run as {badge}"),
                )
            )
    return findings


def _api_token_findings(spec: Mapping[str, Any], prefix: str, planned: WorkerPlan) -> list[Finding]:
    """worker-api-token: the ServiceAccount plugin's API-token volume, where the patch does not remove it
    (a /validate of a pod the mutating webhook did not see, or that another webhook gave it again)."""
    volumes = object_list(spec.get("volumes"), prefix, "spec.volumes")
    carried = [
        (index, name)
        for index, name in api_access_volumes(spec, volumes).items()
        if index not in planned.removed_volumes
    ]
    if not carried:
        return []
    name = carried[0][1]
    where = ", ".join(f"{prefix}spec.volumes[{i}]" for i, _ in carried)
    return [
        Finding(
            rule=c.RULE_WORKER_API_TOKEN,
            message=(
                f"a worker must not carry the Kubernetes API token (volume {show(name)} at {where}); "
                "its only token is the Vault one, unless the pod sets automountServiceAccountToken: true"
            ),
            warning=short_warning(c.RULE_WORKER_API_TOKEN, f"a worker must not carry API token {show(name)}"),
        )
    ]


def carried_api_token(spec: Mapping[str, Any]) -> Finding | None:
    """worker-api-token on a worker's spec as it is (a running pod, for the cluster audit)."""
    found = _api_token_findings(spec, "", AS_SENT)
    return found[0] if found else None


def _tenant_mismatches(spec: Mapping[str, Any], prefix: str, settings: WorkerSettings) -> list[Finding]:
    findings: list[Finding] = []
    for list_name in POD_CONTAINER_LISTS:
        list_path = f"{prefix}spec.{list_name}"
        for ci, container in enumerate(object_list(spec.get(list_name), list_path)):
            where = f"{list_path}[{ci}]"
            for ei, entry in enumerate(object_list(container.get("env"), where, ".env")):
                name = entry.get("name")
                expected = settings.identity.get(name) if isinstance(name, str) else None
                if expected is None:
                    continue
                # valueFrom cannot be checked here: fail closed, as for a literal other value.
                if entry.get("value") == expected and entry.get("valueFrom") is None:
                    continue
                subject = f"container {container_name(container)}: {name}"
                findings.append(
                    Finding(
                        rule=c.RULE_TENANT_MISMATCH,
                        message=f"{subject} does not match the namespace binding ({where}.env[{ei}])",
                        warning=short_warning(
                            c.RULE_TENANT_MISMATCH, f"{subject} does not match the namespace"
                        ),
                    )
                )
    return findings


# --- Findings that are not about the pod's content ---------------------------------------------------------


def not_ready_finding() -> Finding:
    return Finding(
        rule=c.RULE_BINDINGS_NOT_READY,
        message="namespace bindings are not loaded yet; retry in a few seconds",
        warning=short_warning(c.RULE_BINDINGS_NOT_READY, "namespace bindings not loaded yet; retry"),
        code=503,
    )


def unknown_pack_finding(
    namespace: str, binding: NamespaceBinding, env: Environment | None, refused: str = "worker pods are"
) -> Finding:
    if env is None:
        env_name = show(binding.env)
        text = f"namespace {show(namespace)} is bound to environment {env_name}, which is not configured"
    else:
        text = f"environment {show(env.name)} uses unknown secrets pack {show(env.secrets_pack)}"
    return Finding(
        rule=c.RULE_UNKNOWN_SECRETS_PACK,
        message=f"{text}; {refused} refused there",
        warning=short_warning(c.RULE_UNKNOWN_SECRETS_PACK, text),
    )


def invalid_object_finding(error: InvalidObject) -> Finding:
    text = f"{error.path}: expected {error.expected}"
    return Finding(
        rule=c.RULE_INVALID_OBJECT, message=text, warning=short_warning(c.RULE_INVALID_OBJECT, text), code=422
    )


# --- The decision ------------------------------------------------------------------------------------------

Scope = Literal["pod", "ephemeral", "template"]


def _scope(request: ReviewRequest) -> tuple[Scope, tuple[str, ...]] | None:
    """Which part of the object the rules judge, or None when this request is none of our business."""
    if request.group == "" and request.kind == "Pod":
        if request.operation == "CREATE" and not request.sub_resource:
            return "pod", ()
        if request.operation == "UPDATE" and request.sub_resource == SUBRESOURCE_EPHEMERAL:
            return "ephemeral", ()
        return None
    template = CONTROLLER_TEMPLATES.get((request.group, request.kind))
    if template is not None and request.operation in ("CREATE", "UPDATE") and not request.sub_resource:
        return "template", template
    return None


def _template(obj: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    node: Mapping[str, Any] = obj
    for depth, key in enumerate(path):
        child = optional_object(node.get(key), ".".join(path[: depth + 1]))
        if child is None:
            raise InvalidObject(".".join(path[: depth + 1]), "an object")
        node = child
    return node


def _namespace(request: ReviewRequest, obj: Mapping[str, Any]) -> str:
    if request.namespace:
        return request.namespace
    metadata = obj.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) else ""


def judge(request: ReviewRequest, *, mutating: bool, config: Config, bindings: BindingSource) -> Verdict:
    """Decide one review. ``mutating`` is True for ``/mutate``: only then is a Pod patched, and judged as it
    will be after the patch; ``/validate`` judges a Pod as sent. Controllers are judged the same on both."""
    obj = request.object
    if request.operation in ("DELETE", "CONNECT") or obj is None:
        return Verdict()
    scope = _scope(request)
    if scope is None:
        return Verdict()
    # Never block finalizers and controllers cleaning up an object that is going away.
    if request.operation == "UPDATE" and being_deleted(obj):
        return Verdict()
    namespace = _namespace(request, obj)
    found = bindings.lookup(namespace) if namespace else None
    if found is None:
        return Verdict()  # bound to nothing: untouched
    binding = found if isinstance(found, NamespaceBinding) else None
    env = config.environments.get(binding.env) if binding is not None else None
    enforcement = env.enforcement if env is not None else None
    kind, path = scope
    component: Component | None = None
    try:
        root = _template(obj, path)
        prefix = _PREFIXES[path]
        metadata = metadata_of(root, prefix)
        labels = (
            optional_object(metadata.get("labels"), prefix, "metadata.labels")
            if metadata is not None
            else None
        )
        component = classify(labels or {}, config.selectors)
        if binding is None:
            # The cluster cache has not synced: a worker cannot be judged (retriable), the others pass.
            findings = (not_ready_finding(),) if component == c.COMPONENT_WORKER else ()
            return Verdict(findings, component=component)
        if env is None or not env.pack_is_known:
            if component == c.COMPONENT_WORKER:
                return Verdict(
                    (unknown_pack_finding(namespace, binding, env),), (), component, binding, enforcement
                )
            return Verdict(component=component, binding=binding, enforcement=enforcement)
        if not env.uses_vault:
            return Verdict(component=component, binding=binding, enforcement=enforcement)

        if kind == "ephemeral":
            refs = forbidden_references(spec_of(root, prefix), config.forbidden_secrets, prefix)
            findings = (_dev_secret_finding(refs),) if refs else ()
            return Verdict(findings, (), component, binding, enforcement)

        settings: WorkerSettings | None = None
        plan = AS_SENT
        if component == c.COMPONENT_WORKER:
            settings = worker_settings(env, binding, config.vault_token)
            plan = plan_worker(root, spec_of(root, prefix), prefix, settings, config.service_account)
        validating_pod = kind == "pod" and not mutating
        # /validate of a Pod judges it as sent; the others as it will be after the patch.
        phase: Literal["mutate", "validate", "template"] = (
            "validate" if validating_pod else "mutate" if kind == "pod" else "template"
        )
        findings_list = [_override_finding(override, phase) for override in plan.overrides]
        findings_list += deny_rules(
            root,
            prefix,
            component,
            config,
            settings,
            validating_pod=validating_pod,
            planned=AS_SENT if validating_pod else plan,
        )
        edits = plan.edits if kind == "pod" and mutating else ()
        return Verdict(tuple(findings_list), edits, component, binding, enforcement)
    except InvalidObject as error:
        return Verdict((invalid_object_finding(error),), (), component, binding, enforcement)
