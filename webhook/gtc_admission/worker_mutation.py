"""The worker mutation, pure: what ``/mutate`` changes so that a worker pod (or template) runs on Vault.

``worker_settings`` turns a namespace binding into what a worker of that namespace gets (the Vault
variables it may not override, its env / tenant / team, the projected token and the Vault CA);
``plan_worker`` compares a pod with it and returns a ``WorkerPlan``: the edits of the JSON patch, the
settings of the pod they replace (rule vault-settings-override), and what the deny rules of ``policy.py``
must know to judge the pod as it will be after the patch. Empty when the pod already is (reinvocation).

It reads the object only through ``object_reader.py`` and never copies a value of the pod into a message.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

from gtc_admission import constants as c
from gtc_admission.api_token import api_access_volumes
from gtc_admission.config import CAConfigMap, Environment, NamespaceBinding, TokenSettings
from gtc_admission.object_reader import (
    InvalidObject,
    container_name,
    effective_service_account,
    metadata_of,
    object_list,
    optional_object,
    optional_string,
)
from gtc_admission.patch import Edit, ListEdit, SetMember

POD_CONTAINER_LISTS: Final = ("containers", "initContainers")  # what the worker mutation touches


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
