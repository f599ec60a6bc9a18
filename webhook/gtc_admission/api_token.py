"""The Kubernetes API token volume that the ServiceAccount admission plugin adds, recognised by its shape.

The plugin runs before any webhook. A worker created on ``default`` (every unchanged deployer's) gets the
``kube-api-access-<random>`` projected volume, mounted read-only at
``/var/run/secrets/kubernetes.io/serviceaccount`` in every container and init container, before the
webhook moves it onto ``gtc-worker``. The kubelet then fetches a token for ``gtc-worker`` that the API
server accepts, although the badge sets ``automountServiceAccountToken: false``. A worker needs no API
access: its only token is the Vault-audience one the webhook projects.

Only the exact shape the plugin writes is recognised (plus what the API server defaults into it), so a
volume a deployer wrote themselves, even one with the same name prefix, is never taken for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gtc_admission import constants as c

# What the plugin writes, source by source (kubernetes plugin/pkg/admission/serviceaccount): a token for
# the API server's own audience, the cluster CA from kube-root-ca.crt, the namespace from the downward API.
_TOKEN_PATH: Final = "token"  # noqa: S105 (a file name, not a credential)
_CA_SOURCE: Final = {
    "name": c.API_ACCESS_ROOT_CA_CONFIG_MAP,
    "items": [{"key": "ca.crt", "path": "ca.crt"}],
}
_NAMESPACE_ITEM_PATH: Final = "namespace"
_NAMESPACE_FIELD: Final = "metadata.namespace"
_DEFAULT_MODE: Final = 420  # 0644: the plugin sets it explicitly, the API server would default the same


def is_api_access_volume(volume: Mapping[str, Any]) -> bool:
    """True for the plugin's API-token volume, exactly as the API server hands it to a webhook."""
    name = volume.get("name")
    if not isinstance(name, str) or not name.startswith(c.API_ACCESS_VOLUME_PREFIX):
        return False
    if volume.keys() != {"name", "projected"}:
        return False
    projected = volume["projected"]
    if not isinstance(projected, dict) or projected.keys() - {"sources", "defaultMode"}:
        return False
    if projected.get("defaultMode", _DEFAULT_MODE) != _DEFAULT_MODE:
        return False
    sources = projected.get("sources")
    if not isinstance(sources, list) or len(sources) != 3:
        return False
    token, ca, namespace = sources
    return _is_api_token(token) and _is_root_ca(ca) and _is_namespace(namespace)


def _only(source: object, key: str) -> Mapping[str, Any] | None:
    if not isinstance(source, dict) or source.keys() != {key}:
        return None
    inner = source[key]
    return inner if isinstance(inner, dict) else None


def _is_api_token(source: object) -> bool:
    token = _only(source, "serviceAccountToken")
    if token is None or token.keys() - {"path", "expirationSeconds", "audience"}:
        return False
    # No audience (or an empty one) means the API server's own: a token for Vault has an audience.
    expiration = token.get("expirationSeconds")
    return (
        token.get("path") == _TOKEN_PATH
        and not token.get("audience")
        and (expiration is None or (isinstance(expiration, int) and not isinstance(expiration, bool)))
    )


def _is_root_ca(source: object) -> bool:
    return _only(source, "configMap") == _CA_SOURCE


def _is_namespace(source: object) -> bool:
    downward = _only(source, "downwardAPI")
    if downward is None or downward.keys() != {"items"}:
        return False
    items = downward["items"]
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        return False
    item = items[0]
    field_ref = item.get("fieldRef")
    return (
        item.keys() == {"path", "fieldRef"}
        and item["path"] == _NAMESPACE_ITEM_PATH
        and isinstance(field_ref, dict)
        and field_ref.get("fieldPath") == _NAMESPACE_FIELD
        and field_ref.get("apiVersion", "v1") == "v1"
        and field_ref.keys() <= {"fieldPath", "apiVersion"}
    )


def api_access_volumes(spec: Mapping[str, Any], volumes: list[Mapping[str, Any]]) -> dict[int, str]:
    """The plugin's API-token volumes of a pod spec, by index -> name; none when the pod itself asks for
    the token (``automountServiceAccountToken: true``): that is the pod's explicit choice."""
    if spec.get("automountServiceAccountToken") is True:
        return {}
    return {index: volume["name"] for index, volume in enumerate(volumes) if is_api_access_volume(volume)}
