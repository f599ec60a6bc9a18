"""The admission rules, pure: a parsed review, the config and a binding source in; a ``Verdict`` out.

No I/O and no knowledge of HTTP. ``judge`` decides which object is under review (a Pod, or the pod template
of a workload controller), which namespace binding applies, what the worker mutation is, and which rules
fire on the object as it will be (``/mutate``, controllers) or as it was sent (``/validate`` of a Pod).
``admission.py`` turns the verdict into the AdmissionReview response and the audit record.

Messages and warnings name fields, containers and variables, never a value from the object: env values
and secret contents must not reach logs, audit lines or the client. The object is read, and names taken
from it are shown, only through ``object_reader.py``, because the object may not come from the API server.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

from gtc_admission import constants as c
from gtc_admission.api_token import api_access_volumes
from gtc_admission.bindings import BindingSource
from gtc_admission.config import (
    CAConfigMap,
    Config,
    Enforcement,
    Environment,
    NamespaceBinding,
    Selectors,
    TokenSettings,
)
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
from gtc_admission.patch import Edit, ListEdit, SetMember
from gtc_admission.review import ReviewRequest

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
POD_CONTAINER_LISTS: Final = ("containers", "initContainers")  # what the worker mutation touches
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


@dataclass(frozen=True, slots=True)
class Override:
    """A setting of the pod that the worker mutation replaces (rule vault-settings-override)."""

    where: str  # field path of the replaced entry
    container: str  # shown container name, "" for the pod-level volume
    what: str  # the variable name, or a description of the volume / mount
    removed: bool = False  # the patch removes the entry instead of replacing it


# An env entry of the pod by (container list, container index, entry index).
EnvIndex = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """The worker mutation, and what it changes that the deny rules look at.

    The deny rules judge a worker "as it will be after the patch". Rather than building that pod, they
    are told what the patch changes: the env entries and volumes it replaces (they are then ours and
    reference no Secret), and the ServiceAccount it sets. What the patch appends (the Vault env vars,
    the token volume and mount) references no Secret and carries the binding's own identity, so the
    rules would find nothing there. tests/unit/test_properties.py checks that this gives the findings
    of /validate on the patched pod.
    """

    edits: tuple[Edit, ...]
    overrides: tuple[Override, ...]
    replaced_env: frozenset[EnvIndex] = frozenset()
    replaced_volumes: frozenset[int] = frozenset()
    service_account: str | None = None  # set by the patch; None: as sent
    removed_volumes: frozenset[int] = frozenset()  # the API-token volumes the patch removes


AS_SENT: Final = WorkerPlan((), ())  # no patch: the rules judge the pod as it was sent


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


# --- Worker mutation -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What the mutation puts into a worker pod of one namespace binding (only immutable parts)."""

    vault_settings: Mapping[str, str]  # variables the pod may not override -> configured value
    identity: Mapping[str, str]  # GREENTIC_ENV/TENANT/TEAM -> the binding's values
    added: tuple[tuple[str, str], ...]  # variables added when missing, in order
    audience: str
    expiration_seconds: int
    token_file: str
    mount_dir: str
    ca_config_map: CAConfigMap | None = None  # projected next to the token as c.VAULT_CA_FILE


@lru_cache(maxsize=256)
def worker_settings(env: Environment, binding: NamespaceBinding, token: TokenSettings) -> WorkerSettings:
    vault = env.vault
    if vault is None:  # parse_config refuses a Vault environment without vault settings
        raise ValueError(f"environment {env.name} has no vault settings")
    vault_settings = {
        c.ENV_SECRETS_BACKEND: c.BACKEND_VAULT,
        c.ENV_VAULT_ADDR: vault.addr,
        c.ENV_VAULT_ROLE: vault.role_for(env.name, binding.tenant, binding.team),
        c.ENV_VAULT_TOKEN_PATH: token.path,
        c.ENV_VAULT_KV_MOUNT: vault.kv_mount,
        c.ENV_VAULT_KV_PREFIX: vault.kv_prefix,
    }
    ca_env: list[tuple[str, str]] = []
    if vault.ca_config_map is not None:
        # Ours like VAULT_ADDR: a pod pointing VAULT_CACERT at a CA of its choosing would trust any server.
        ca_env.append((c.ENV_VAULT_CACERT, f"{token.directory}/{c.VAULT_CA_FILE}"))
    if vault.insecure_http:
        # The runtime refuses http:// without it; pinned like VAULT_ADDR, so it is the config's choice.
        ca_env.append((c.ENV_VAULT_INSECURE_HTTP, "true"))
    vault_settings.update(ca_env)
    # Pinned in TLS environments too (not added): a pod must not switch plain HTTP on by itself.
    vault_settings.setdefault(c.ENV_VAULT_INSECURE_HTTP, "false")
    identity = {
        c.ENV_GREENTIC_ENV: env.name,
        c.ENV_GREENTIC_TENANT: binding.tenant,
        c.ENV_GREENTIC_TEAM: binding.team,
    }
    added = [
        (c.ENV_SECRETS_BACKEND, c.BACKEND_VAULT),
        (c.ENV_VAULT_ADDR, vault.addr),
        (c.ENV_VAULT_ROLE, vault_settings[c.ENV_VAULT_ROLE]),
        (c.ENV_VAULT_TOKEN_PATH, token.path),
        *ca_env,
        *identity.items(),
    ]
    # The runtime's defaults need no variable; an explicit one would only add noise to every pod.
    if vault.kv_mount != c.DEFAULT_KV_MOUNT:
        added.append((c.ENV_VAULT_KV_MOUNT, vault.kv_mount))
    if vault.kv_prefix != c.DEFAULT_KV_PREFIX:
        added.append((c.ENV_VAULT_KV_PREFIX, vault.kv_prefix))
    return WorkerSettings(
        vault_settings=vault_settings,
        identity=identity,
        added=tuple(added),
        audience=token.audience,
        expiration_seconds=token.expiration_seconds,
        token_file=token.filename,
        mount_dir=token.directory,
        ca_config_map=vault.ca_config_map,
    )


def token_volume(settings: WorkerSettings) -> dict[str, Any]:
    """A fresh copy each time: it ends up in the patch and in the judged view."""
    sources: list[dict[str, Any]] = [
        {
            "serviceAccountToken": {
                "audience": settings.audience,
                "expirationSeconds": settings.expiration_seconds,
                "path": settings.token_file,
            }
        }
    ]
    if settings.ca_config_map is not None:
        # Not optional: without its CA the worker must not start (the kubelet holds the pod in
        # ContainerCreating with an event naming the missing ConfigMap), rather than trust another CA.
        sources.append({"configMap": _ca_projection(settings.ca_config_map)})
    return {"name": c.VAULT_TOKEN_VOLUME, "projected": {"sources": sources}}


def _ca_projection(ca: CAConfigMap) -> dict[str, Any]:
    return {"name": ca.name, "items": [{"key": ca.key, "path": c.VAULT_CA_FILE}]}


def token_mount(settings: WorkerSettings) -> dict[str, Any]:
    return {"name": c.VAULT_TOKEN_VOLUME, "mountPath": settings.mount_dir, "readOnly": True}


def _is_token_volume(volume: Mapping[str, Any], settings: WorkerSettings) -> bool:
    """Compare only what the webhook sets: the API server adds e.g. ``projected.defaultMode: 420``."""
    if volume.keys() - {"name", "projected"}:
        return False  # a second volume source next to ours
    projected = volume.get("projected")
    if not isinstance(projected, dict):
        return False
    sources = projected.get("sources")
    expected = 1 if settings.ca_config_map is None else 2
    if not isinstance(sources, list) or len(sources) != expected or not isinstance(sources[0], dict):
        return False
    token = sources[0].get("serviceAccountToken")
    if not (
        isinstance(token, dict)
        and token.get("audience") == settings.audience
        and token.get("expirationSeconds") == settings.expiration_seconds
        and token.get("path") == settings.token_file
    ):
        return False
    if settings.ca_config_map is None:
        return True
    # Exactly our projection: another ConfigMap, key, file name or item mode, or any "optional" (true would
    # let the pod start without the CA), is replaced. The API server defaults nothing inside it.
    source = sources[1]
    return (
        isinstance(source, dict)
        and source.keys() == {"configMap"}
        and source["configMap"] == _ca_projection(settings.ca_config_map)
    )


def _placement(mount_path: str, directory: str) -> Literal["at", "inside"] | None:
    """Where a container's mount lands relative to the token folder: on it, inside it, or elsewhere.

    Compared as the kernel resolves the path (``/a//b/./c/`` is ``/a/b/c``), so spelling cannot hide it.
    """
    if mount_path.startswith("/") and "//" not in mount_path and "/." not in mount_path:
        # Nothing to resolve but a trailing slash: this check runs for every mount of every worker, and
        # normpath costs 20 times more.
        normalized = mount_path.rstrip("/")
    else:
        normalized = "/" + posixpath.normpath(mount_path).lstrip("/")
    if normalized == directory:
        return "at"
    if normalized.startswith(directory + "/"):
        return "inside"
    return None


def plan_worker(
    root: Mapping[str, Any], spec: Mapping[str, Any], prefix: str, settings: WorkerSettings, badge: str
) -> WorkerPlan:
    """The edits that put a worker pod (or template) on Vault; empty when it already is (reinvocation)."""
    edits: list[Edit] = []
    overrides: list[Override] = []
    replaced_env: set[EnvIndex] = set()

    effective, alias = effective_service_account(spec, prefix)
    volumes_value = spec.get("volumes")
    volumes = object_list(volumes_value, prefix, "spec.volumes")
    # The API token the ServiceAccount plugin mounted while the pod was on "default" goes, with its mounts:
    # a worker's only token is the Vault one (api_token.py says why and how it is recognised).
    api_volumes = api_access_volumes(spec, volumes)
    service_account: str | None = None
    if effective in ("", c.DEFAULT_SERVICE_ACCOUNT):
        service_account = badge
        edits.append(SetMember(("spec",), "serviceAccountName", badge))
        if alias:
            # Keep the deprecated alias consistent, so no reader of the old field sees "default".
            edits.append(SetMember(("spec",), "serviceAccount", badge))

    for list_name in POD_CONTAINER_LISTS:
        list_path = f"{prefix}spec.{list_name}"
        for ci, container in enumerate(object_list(spec.get(list_name), list_path)):
            where = f"{list_path}[{ci}]"
            at: tuple[str, str, int] = ("spec", list_name, ci)
            replaced = _plan_env(
                container, where=where, at=at, settings=settings, edits=edits, overrides=overrides
            )
            replaced_env.update((list_name, ci, ei) for ei in replaced)
            _plan_mount(
                container,
                where=where,
                at=at,
                settings=settings,
                edits=edits,
                overrides=overrides,
                drop=frozenset(api_volumes.values()),
            )

    replace: list[tuple[int, Any]] = []
    found = False
    for vi, volume in enumerate(volumes):
        if volume.get("name") == c.VAULT_TOKEN_VOLUME:
            found = True
            if not _is_token_volume(volume, settings):
                replace.append((vi, token_volume(settings)))
                overrides.append(
                    Override(f"{prefix}spec.volumes[{vi}]", "", f"volume {c.VAULT_TOKEN_VOLUME}")
                )
    if volumes_value is None:
        edits.append(SetMember(("spec",), "volumes", [token_volume(settings)]))
    elif replace or api_volumes or not found:
        edits.append(
            ListEdit(
                ("spec", "volumes"),
                tuple(replace),
                () if found else (token_volume(settings),),
                tuple(api_volumes),
            )
        )

    metadata = metadata_of(root, prefix)
    if metadata is None:
        edits.append(
            SetMember((), "metadata", {"annotations": {c.ANNOTATION_SECRETS_BACKEND: c.BACKEND_VAULT}})
        )
    else:
        annotations = optional_object(metadata.get("annotations"), prefix, "metadata.annotations")
        if annotations is None:
            edits.append(
                SetMember(("metadata",), "annotations", {c.ANNOTATION_SECRETS_BACKEND: c.BACKEND_VAULT})
            )
        elif annotations.get(c.ANNOTATION_SECRETS_BACKEND) != c.BACKEND_VAULT:
            edits.append(
                SetMember(("metadata", "annotations"), c.ANNOTATION_SECRETS_BACKEND, c.BACKEND_VAULT)
            )
    return WorkerPlan(
        tuple(edits),
        tuple(overrides),
        frozenset(replaced_env),
        frozenset(index for index, _ in replace),
        service_account,
        frozenset(api_volumes),
    )


def _plan_env(
    container: Mapping[str, Any],
    *,
    where: str,
    at: tuple[str, str, int],
    settings: WorkerSettings,
    edits: list[Edit],
    overrides: list[Override],
) -> list[int]:
    """Plans the container's env (into ``edits`` and ``overrides``); the indices of the replaced entries."""
    env_value = container.get("env")
    replace: list[tuple[int, Any]] = []
    seen: set[str] = set()
    for ei, entry in enumerate(object_list(env_value, where, ".env")):
        name = entry.get("name")
        if not isinstance(name, str):
            raise InvalidObject(f"{where}.env[{ei}].name", "a string")
        configured = settings.vault_settings.get(name)
        if configured is not None:
            seen.add(name)
            # valueFrom counts as setting it: a ConfigMap must not point the token at another server.
            if entry.get("value") != configured or entry.get("valueFrom") is not None:
                replace.append((ei, {"name": name, "value": configured}))
                overrides.append(Override(f"{where}.env[{ei}]", container_name(container), name))
        elif name in settings.identity:
            seen.add(name)  # a different value is tenant-mismatch (a denial), never silently rewritten
    if seen:
        append = [{"name": name, "value": value} for name, value in settings.added if name not in seen]
    else:  # the usual case: nothing of ours is set yet
        append = [{"name": name, "value": value} for name, value in settings.added]
    if env_value is None:
        if append:
            edits.append(SetMember(at, "env", append))
    elif replace or append:
        edits.append(ListEdit((*at, "env"), tuple(replace), tuple(append)))
    return [index for index, _ in replace]


def _plan_mount(
    container: Mapping[str, Any],
    *,
    where: str,
    at: tuple[str, str, int],
    settings: WorkerSettings,
    edits: list[Edit],
    overrides: list[Override],
    drop: frozenset[str],
) -> None:
    """Plans the container's mounts: ours on the token folder, none inside it, none of a ``drop`` volume."""
    mounts_value = container.get("volumeMounts")
    replace: list[tuple[int, Any]] = []
    remove: list[int] = []
    present = False
    for mi, mount in enumerate(object_list(mounts_value, where, ".volumeMounts")):
        if drop and isinstance(mount.get("name"), str) and mount["name"] in drop:
            remove.append(mi)  # its volume goes: a mount of a missing volume would make the pod invalid
            continue
        path = optional_string(mount.get("mountPath"), where, ".volumeMounts[", mi, "].mountPath")
        placement = None if path is None else _placement(path, settings.mount_dir)
        if placement is None:
            continue
        if placement == "inside":
            # A file or folder mounted inside the token folder (a subPath mount at .../token, say) would
            # shadow what the kubelet projects there: the token, or the Vault CA. It is removed.
            remove.append(mi)
            overrides.append(
                Override(
                    f"{where}.volumeMounts[{mi}]",
                    container_name(container),
                    f"mount inside {settings.mount_dir}",
                    removed=True,
                )
            )
            continue
        present = True
        # Compare only what the webhook sets (name, folder, read-only); anything else mounted on the
        # token folder would let the pod hand the runtime a token of its choosing.
        if mount.get("name") != c.VAULT_TOKEN_VOLUME or mount.get("readOnly") is not True:
            replace.append((mi, token_mount(settings)))
            overrides.append(
                Override(
                    f"{where}.volumeMounts[{mi}]",
                    container_name(container),
                    f"mount at {settings.mount_dir}",
                )
            )
    if mounts_value is None:
        edits.append(SetMember(at, "volumeMounts", [token_mount(settings)]))
    elif replace or remove or not present:
        edits.append(
            ListEdit(
                (*at, "volumeMounts"),
                tuple(replace),
                () if present else (token_mount(settings),),
                tuple(remove),
            )
        )


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
