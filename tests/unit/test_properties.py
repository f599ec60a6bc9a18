"""Properties over generated pods (hypothesis): the patch applies cleanly, mutation is idempotent (also
after API-server defaulting), a patched worker passes /validate, and no env value ever leaks."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gtc_admission import constants as c
from gtc_admission.admission import Outcome, handle_review, review_with_edits
from gtc_admission.api_token import is_api_access_volume
from gtc_admission.patch import apply_edits
from tests.unit.conftest import (
    BADGE,
    BINDINGS,
    CA_CONFIG_MAP,
    CA_FILE,
    CA_KEY,
    CANARY,
    CONFIG,
    DEV_SECRET,
    TOKEN_DIR,
    api_access_volume,
    as_admitted,
    review,
)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ENV_NAMES = [
    c.ENV_SECRETS_BACKEND,
    c.ENV_VAULT_ADDR,
    c.ENV_VAULT_ROLE,
    c.ENV_VAULT_TOKEN_PATH,
    c.ENV_VAULT_KV_MOUNT,
    c.ENV_VAULT_KV_PREFIX,
    c.ENV_VAULT_CACERT,
    c.ENV_VAULT_INSECURE_HTTP,
    c.ENV_GREENTIC_ENV,
    c.ENV_GREENTIC_TENANT,
    c.ENV_GREENTIC_TEAM,
    "LOG_LEVEL",
    "HTTP_PORT",
]
# Values a pod may carry: the canary, the binding's own values, the configured ones.
ENV_VALUES = [
    CANARY,
    "prod",
    "acme",
    "core",
    "web",
    "stage",
    "vault",
    "https://vault.vault.svc:8200",
    "secret",
    CA_FILE,
    "true",
    "false",
]

value_source: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({"value": st.sampled_from(ENV_VALUES)}),
    st.just({"valueFrom": {"configMapKeyRef": {"name": "cm", "key": CANARY}}}),
    st.just({"valueFrom": {"secretKeyRef": {"name": DEV_SECRET, "key": "k"}}}),
    st.just({"valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": "k"}}}),
    st.just({}),
)
env_entry = st.builds(lambda name, source: {"name": name, **source}, st.sampled_from(ENV_NAMES), value_source)
mount = st.one_of(
    st.just({"name": "data", "mountPath": "/data"}),
    st.just({"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}),
    st.just({"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR}),
    st.just({"name": "data", "mountPath": TOKEN_DIR + "/"}),
    st.just({"name": c.VAULT_TOKEN_VOLUME, "mountPath": "/elsewhere", "readOnly": True}),
    st.just({"name": "data", "mountPath": TOKEN_DIR + "/token", "subPath": "t"}),  # inside: removed
    st.just({"name": "data", "mountPath": TOKEN_DIR + "//vault-ca.crt"}),
)
optional_list: st.SearchStrategy[str | list[Any] | None] = st.one_of(
    st.none(), st.just("absent"), st.just([])
)


def _field(target: dict[str, Any], key: str, value: Any) -> None:
    if value != "absent":
        target[key] = value


@st.composite
def containers(draw: st.DrawFn, min_size: int) -> list[dict[str, Any]]:
    out = []
    for index in range(draw(st.integers(min_value=min_size, max_value=3))):
        item: dict[str, Any] = {"name": f"c{index}", "image": "img"}
        _field(item, "env", draw(st.one_of(optional_list, st.lists(env_entry, max_size=5))))
        _field(item, "volumeMounts", draw(st.one_of(optional_list, st.lists(mount, max_size=2))))
        if draw(st.booleans()):
            item["envFrom"] = [{"secretRef": {"name": draw(st.sampled_from([DEV_SECRET, "ok-secret"]))}}]
        out.append(item)
    return out


volume = st.one_of(
    st.just({"name": "data", "emptyDir": {}}),
    st.just({"name": c.VAULT_TOKEN_VOLUME, "emptyDir": {}}),
    st.just({"name": c.VAULT_TOKEN_VOLUME, "secret": {"secretName": DEV_SECRET}}),
    st.just(
        {
            "name": c.VAULT_TOKEN_VOLUME,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}
                ],
            },
        }
    ),
    st.just(
        {
            "name": c.VAULT_TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {"audience": "other", "path": "token"}}]},
        }
    ),
    st.just({"name": "legacy", "projected": {"sources": [{"secret": {"name": DEV_SECRET}}]}}),
    # The API-token volume's name prefix on a volume of another shape: the deployer's own, never touched.
    st.just(
        {
            **api_access_volume("kube-api-access-own"),
            "projected": {"sources": [{"serviceAccountToken": {"audience": "sts", "path": "token"}}]},
        }
    ),
    # The token volume with the CA source of environment "secure": exact, tampered, next to a Secret.
    *(
        st.just(
            {
                "name": c.VAULT_TOKEN_VOLUME,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": "vault",
                                "expirationSeconds": 600,
                                "path": "token",
                            }
                        },
                        {"configMap": {"name": name, "items": [{"key": CA_KEY, "path": "vault-ca.crt"}]}},
                        *extra,
                    ]
                },
            }
        )
        for name, extra in (
            (CA_CONFIG_MAP, []),
            ("attacker-ca", []),
            (CA_CONFIG_MAP, [{"secret": {"name": DEV_SECRET}}]),
        )
    ),
)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(
        st.sampled_from([{"greentic.ai/component": "worker"}] * 3 + [{"greentic.ai/component": "router"}, {}])
    )
    metadata: dict[str, Any] = {"generateName": "p-", "labels": labels}
    _field(
        metadata,
        "annotations",
        draw(
            st.sampled_from(
                [
                    "absent",
                    None,
                    {},
                    {c.ANNOTATION_SECRETS_BACKEND: "vault"},
                    {c.ANNOTATION_SECRETS_BACKEND: "k8s", "x/y": "z"},
                ]
            )
        ),
    )
    spec: dict[str, Any] = {"containers": draw(containers(1))}
    _field(
        spec, "serviceAccountName", draw(st.sampled_from(["absent", None, "", "default", BADGE, "app-sa"]))
    )
    _field(spec, "serviceAccount", draw(st.sampled_from(["absent", "", "default", BADGE, "app-sa"])))
    _field(spec, "automountServiceAccountToken", draw(st.sampled_from(["absent", "absent", True, False])))
    _field(spec, "initContainers", draw(st.one_of(st.just("absent"), containers(0))))
    _field(
        spec,
        "volumes",
        draw(st.one_of(optional_list, st.lists(volume, max_size=3, unique_by=lambda v: v["name"]))),
    )
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    _field(obj, "metadata", draw(st.sampled_from([metadata] * 9 + ["absent"])))
    if draw(st.booleans()) and all(isinstance(item, dict) for item in spec.get("volumes") or []):
        # As the API server hands it over: after the ServiceAccount plugin's API-token volume and mounts.
        obj = as_admitted(obj)
    # Through JSON, as the API server sends it: st.just() shares objects, a decoded body never does.
    decoded: dict[str, Any] = json.loads(json.dumps(obj))
    return decoded


VAULT_NAMESPACES = frozenset({"acme-prod", "acme-stage", "acme-canary", "acme-secure"})
namespaces = st.sampled_from(
    ["acme-prod", "acme-prod", "acme-stage", "acme-canary", "acme-secure", "acme-dev", "unbound"]
)


def _patch(outcome: Outcome) -> list[dict[str, Any]]:
    encoded = outcome.review["response"].get("patch")
    return json.loads(base64.b64decode(encoded)) if encoded else []


def _mutate(obj: dict[str, Any], namespace: str) -> Outcome:
    return handle_review(
        review(obj, namespace=namespace), endpoint="mutate", config=CONFIG, bindings=BINDINGS
    )


def _deny_rules(outcome: Outcome) -> set[str]:
    return set(outcome.rules) - {c.RULE_VAULT_SETTINGS_OVERRIDE}


def _api_server_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server fills in after admission: defaultMode, readOnly flags, the alias, pull policy."""
    result = copy.deepcopy(obj)
    spec = result["spec"]
    for item in spec.get("volumes") or []:
        if "projected" in item:
            item["projected"].setdefault("defaultMode", 420)
    for list_name in ("containers", "initContainers"):
        for entry in spec.get(list_name) or []:
            entry.setdefault("imagePullPolicy", "IfNotPresent")
            for volume_mount in entry.get("volumeMounts") or []:
                volume_mount.setdefault("readOnly", False)
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    return result


@PROPERTY_SETTINGS
@given(obj=pods(), namespace=namespaces)
def test_patch_applies_cleanly_and_matches_the_judged_view(obj: dict[str, Any], namespace: str) -> None:
    """jsonpatch applies the wire patch to the original; the result equals the view /mutate judged."""
    original = copy.deepcopy(obj)
    body = review(obj, namespace=namespace)
    outcome, edits = review_with_edits(body, endpoint="mutate", config=CONFIG, bindings=BINDINGS)
    assert body["request"]["object"] == original  # the decision never modifies its input
    patch = _patch(outcome)
    if outcome.decision == "denied":
        assert patch == []
        return
    result = jsonpatch.apply_patch(original, patch)
    assert result == apply_edits(original, edits)
    assert [op["path"] for op in patch] == outcome.audit["patched"]
    # Only the plugin's API-token volume (on a worker) and a volume named like ours are ever taken away.
    kept = result["spec"].get("volumes") or []
    for volume in original["spec"].get("volumes") or []:
        if volume not in kept:
            assert volume["name"] == c.VAULT_TOKEN_VOLUME or (
                is_api_access_volume(volume) and outcome.audit["component"] == "worker"
            )
    # No mount is left of a volume the patch removed.
    gone = {v["name"] for v in original["spec"].get("volumes") or []} - {v["name"] for v in kept}
    for list_name in ("containers", "initContainers"):
        for item in result["spec"].get(list_name) or []:
            assert not gone & {m["name"] for m in item.get("volumeMounts") or []}


@PROPERTY_SETTINGS
@given(obj=pods(), namespace=namespaces, defaulted=st.booleans())
def test_mutation_is_idempotent(obj: dict[str, Any], namespace: str, defaulted: bool) -> None:
    """The patched pod sent again (as patched, or after API-server defaulting) yields no patch."""
    first = _mutate(obj, namespace)
    if first.decision == "denied":
        return
    once = jsonpatch.apply_patch(obj, _patch(first))
    again = _mutate(_api_server_defaults(once) if defaulted else once, namespace)
    assert _patch(again) == []
    assert c.RULE_VAULT_SETTINGS_OVERRIDE not in again.rules
    assert _deny_rules(again) == _deny_rules(first)


@PROPERTY_SETTINGS
@given(obj=pods(), namespace=namespaces)
def test_patched_pod_passes_validate(obj: dict[str, Any], namespace: str) -> None:
    """/validate of the patched pod fires exactly the deny rules /mutate fired (allowed when mutate was)."""
    first = _mutate(obj, namespace)
    event(f"mutate {first.decision}, {first.audit['component']}")
    # The patch always removes the plugin's API token from a worker, so /mutate never reports it.
    assert c.RULE_WORKER_API_TOKEN not in first.rules
    if first.decision == "denied":
        return
    once = jsonpatch.apply_patch(obj, _patch(first))
    if first.audit["component"] == "worker" and namespace in VAULT_NAMESPACES:
        api_volumes = [v for v in once["spec"].get("volumes") or [] if is_api_access_volume(v)]
        event(f"api token kept: {bool(api_volumes)}")
        assert not api_volumes or once["spec"].get("automountServiceAccountToken") is True
    validated = handle_review(
        review(once, namespace=namespace), endpoint="validate", config=CONFIG, bindings=BINDINGS
    )
    assert _deny_rules(validated) == _deny_rules(first)
    assert validated.review["response"]["allowed"] is True
    assert c.RULE_VAULT_SETTINGS_OVERRIDE not in validated.rules
    if namespace == "acme-prod" and first.audit["component"] == "worker":
        # serviceAccountName wins; the deprecated alias counts when the name is empty (API server semantics).
        assert (once["spec"].get("serviceAccountName") or once["spec"].get("serviceAccount")) == BADGE


@PROPERTY_SETTINGS
@given(obj=pods(), namespace=namespaces, endpoint=st.sampled_from(["mutate", "validate"]))
def test_no_value_leaks_and_warnings_are_short(obj: dict[str, Any], namespace: str, endpoint: Any) -> None:
    """No env value reaches the response (patch aside from configured values), the audit or a warning."""
    outcome = handle_review(
        review(obj, namespace=namespace), endpoint=endpoint, config=CONFIG, bindings=BINDINGS
    )
    assert CANARY not in json.dumps(outcome.review) + json.dumps(outcome.audit)
    assert CANARY not in json.dumps(_patch(outcome))
    for warning in outcome.review["response"].get("warnings", []):
        assert warning.isascii() and len(warning) <= 120
