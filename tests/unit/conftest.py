"""Shared builders for the decision-core tests: a config with one environment per case, pods, reviews.

Plain functions (imported by the tests) and a few session fixtures; everything here is immutable or
built fresh per call, so tests cannot leak state into each other.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gtc_admission import constants as c
from gtc_admission.bindings import StaticBindings
from gtc_admission.config import Config, parse_config

BADGE = "gtc-worker"
DEV_SECRET = "gtc-dev-secrets"
# A value that must never appear in a response, warning, audit record or error message.
CANARY = "CANARY-5f0c2a9e-never-log-me"

VAULT_ADDR = "https://vault.vault.svc:8200"
TOKEN_PATH = "/var/run/secrets/greentic/vault/token"
TOKEN_DIR = "/var/run/secrets/greentic/vault"
# Environment "secure" (namespace acme-secure) trusts the CA of ConfigMap CA_CONFIG_MAP, key CA_KEY.
CA_CONFIG_MAP = "vault-ca"
CA_KEY = "bundle.pem"
CA_FILE = TOKEN_DIR + "/vault-ca.crt"

CONFIG_DOCUMENT: dict[str, Any] = {
    "serviceAccount": BADGE,
    "forbiddenSecrets": [DEV_SECRET, "legacy-secrets"],
    "selectors": {
        "worker": {"greentic.ai/component": "worker"},
        "router": {"greentic.ai/component": "router"},
    },
    "vaultToken": {"audience": "vault", "expirationSeconds": 600, "path": TOKEN_PATH},
    "environments": {
        "prod": {
            "secretsPack": "greentic.secrets.vault",
            "enforcement": "deny",
            "vault": {"addr": VAULT_ADDR, "role": "gtc-{env}-{tenant}"},
        },
        "stage": {
            "secretsPack": "greentic.secrets.vault",
            "enforcement": "warn",
            "vault": {
                "addr": "https://vault.stage:8200",
                "role": "gtc-{env}-{tenant}-{team}",
                "kvMount": "kv",
                "kvPrefix": "gt/stage",
            },
        },
        "canary": {
            "secretsPack": "greentic.secrets.vault",
            "enforcement": "dryrun",
            "vault": {"addr": VAULT_ADDR, "role": "gtc-{env}-{tenant}"},
        },
        "secure": {
            "secretsPack": "greentic.secrets.vault",
            "vault": {"addr": VAULT_ADDR, "caConfigMap": {"name": CA_CONFIG_MAP, "key": CA_KEY}},
        },
        "dev": {"secretsPack": "greentic.secrets.dev-store"},
        "odd": {"secretsPack": "greentic.secrets.unheard-of"},
    },
    "namespaces": {
        "acme-prod": {"env": "prod", "tenant": "acme", "team": "core"},
        "acme-stage": {"env": "stage", "tenant": "acme", "team": "web"},
        "acme-canary": {"env": "canary", "tenant": "acme"},
        "acme-secure": {"env": "secure", "tenant": "acme", "team": "core"},
        "acme-dev": {"env": "dev", "tenant": "acme"},
        "acme-odd": {"env": "odd", "tenant": "acme"},
        "acme-ghost": {"env": "ghost", "tenant": "acme"},
    },
}


def make_config(**overrides: Any) -> Config:
    document = copy.deepcopy(CONFIG_DOCUMENT)
    document.update(overrides)
    return parse_config(document)


CONFIG = make_config()
BINDINGS = StaticBindings(CONFIG.namespaces)


@pytest.fixture(scope="session")
def config() -> Config:
    return CONFIG


@pytest.fixture(scope="session")
def bindings() -> StaticBindings:
    return BINDINGS


def container(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "ghcr.io/greentic/worker:1", **fields}


def pod(
    component: str | None = "worker",
    *,
    containers: list[dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Pod as the API server sends it to a webhook on CREATE (serviceAccountName defaulted)."""
    pod_labels = dict(labels or {})
    if component is not None:
        pod_labels["greentic.ai/component"] = component
    pod_spec: dict[str, Any] = {"serviceAccountName": "default", "containers": containers or [container()]}
    pod_spec.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "worker-", "labels": pod_labels},
        "spec": pod_spec,
    }


API_ACCESS_VOLUME = "kube-api-access-x7k2d"


def api_access_volume(name: str = API_ACCESS_VOLUME) -> dict[str, Any]:
    """The API-token volume exactly as the ServiceAccount admission plugin writes it (before webhooks)."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


def as_admitted(obj: dict[str, Any], name: str = API_ACCESS_VOLUME) -> dict[str, Any]:
    """The pod as the API server hands it to webhooks on CREATE: after the ServiceAccount plugin, which
    (its ServiceAccount not opting out) appends its API-token volume and mounts it read-only in every
    container and init container that has nothing mounted at the token folder yet."""
    result = copy.deepcopy(obj)
    spec = result["spec"]
    if spec.get("automountServiceAccountToken") is False:
        return result
    spec.setdefault("serviceAccountName", "default")
    spec["volumes"] = [*(spec.get("volumes") or []), api_access_volume(name)]
    for list_name in ("initContainers", "containers"):
        for item in spec.get(list_name) or []:
            mounts = item.get("volumeMounts") or []
            if all(m.get("mountPath") != c.API_ACCESS_MOUNT_PATH for m in mounts):
                mount = {"name": name, "readOnly": True, "mountPath": c.API_ACCESS_MOUNT_PATH}
                item["volumeMounts"] = [*mounts, mount]
    return result


def controller(kind: str, template: Mapping[str, Any]) -> dict[str, Any]:
    """A workload controller around a pod (its metadata and spec, those it has, become the template)."""
    inner = {key: copy.deepcopy(template[key]) for key in ("metadata", "spec") if key in template}
    group = "batch" if kind in ("Job", "CronJob") else "apps"
    if kind == "CronJob":
        spec: dict[str, Any] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": inner}}}
    else:
        spec = {"template": inner}
    return {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "w"}, "spec": spec}


def review(
    obj: Mapping[str, Any] | None,
    *,
    namespace: str = "acme-prod",
    operation: str = "CREATE",
    kind: str | None = None,
    group: str | None = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
    uid: str = "0b5b7c4e-1111-4d2e-9f00-000000000001",
) -> dict[str, Any]:
    """An AdmissionReview request as the API server sends it."""
    obj_kind = kind or (obj or {}).get("kind", "Pod")
    if group is None:
        api_version = str((obj or {}).get("apiVersion", "v1"))
        group = api_version.rpartition("/")[0]
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": obj_kind},
        "resource": {"group": group, "version": "v1", "resource": obj_kind.lower() + "s"},
        "operation": operation,
        "namespace": namespace,
        "userInfo": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:authenticated"]},
        "object": copy.deepcopy(obj) if obj is not None else None,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """The worker's ServiceAccount token file, as the fake Vault of test_resolve.py accepts it."""
    path = tmp_path / "token"
    path.write_text("jwt-acme\n")
    return path
