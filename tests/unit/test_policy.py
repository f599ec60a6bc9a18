"""The rules of issue 2, one table per rule and per reference location, through the pure decision core."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from gtc_admission import constants as c
from gtc_admission.admission import Endpoint, Outcome, handle_review
from gtc_admission.bindings import NOT_READY, LayeredBindings, Lookup, StaticBindings
from gtc_admission.config import Config, NamespaceBinding, parse_config
from gtc_admission.policy import classify, forbidden_references
from tests.unit.conftest import (
    BADGE,
    BINDINGS,
    CA_CONFIG_MAP,
    CA_FILE,
    CA_KEY,
    CANARY,
    CONFIG,
    CONFIG_DOCUMENT,
    DEV_SECRET,
    TOKEN_DIR,
    TOKEN_PATH,
    VAULT_ADDR,
    container,
    controller,
    pod,
    review,
)


class NotReadyBindings:
    """A cluster source that has not synced yet."""

    ready = False

    def lookup(self, namespace: str) -> Lookup:
        return NOT_READY


def run(
    obj: dict[str, Any] | None,
    endpoint: Endpoint = "mutate",
    *,
    config: Config = CONFIG,
    bindings: Any = BINDINGS,
    **kwargs: Any,
) -> Outcome:
    return handle_review(review(obj, **kwargs), endpoint=endpoint, config=config, bindings=bindings)


def response(outcome: Outcome) -> dict[str, Any]:
    result: dict[str, Any] = outcome.review["response"]
    return result


def patch_of(outcome: Outcome) -> list[dict[str, Any]]:
    encoded = response(outcome).get("patch")
    return json.loads(base64.b64decode(encoded)) if encoded else []


def patched(obj: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(obj), patch_of(outcome))
    return result


def env_of(obj: dict[str, Any], index: int = 0, list_name: str = "containers") -> dict[str, Any]:
    """name -> value (or the valueFrom object) of one container after the patch."""
    out: dict[str, Any] = {}
    for entry in obj["spec"][list_name][index].get("env") or []:
        out[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return out


def denial(outcome: Outcome) -> str:
    assert response(outcome)["allowed"] is False, response(outcome)
    message: str = response(outcome)["status"]["message"]
    return message


def assert_clean(outcome: Outcome) -> None:
    """No canary value anywhere; warnings short and ASCII."""
    text = json.dumps(outcome.review) + json.dumps(outcome.audit)
    assert CANARY not in text
    assert CANARY not in base64.b64decode(response(outcome).get("patch", "")).decode()
    for warning in response(outcome).get("warnings", []):
        assert len(warning) <= 120 and warning.isascii(), warning


# --- Worker mutation -------------------------------------------------------------------------------------


def test_worker_mutation_puts_the_pod_on_vault() -> None:
    """A worker on `default` gets the badge, Vault env in every container, the token volume, the marker."""
    obj = pod(containers=[container("app"), container("sidecar")], initContainers=[container("init")])
    outcome = run(obj)
    assert outcome.decision == "allowed" and outcome.rules == ()
    after = patched(obj, outcome)
    assert after["spec"]["serviceAccountName"] == BADGE
    expected_env = {
        c.ENV_SECRETS_BACKEND: "vault",
        c.ENV_VAULT_ADDR: VAULT_ADDR,
        c.ENV_VAULT_ROLE: "gtc-prod-acme",
        c.ENV_VAULT_TOKEN_PATH: TOKEN_PATH,
        c.ENV_GREENTIC_ENV: "prod",
        c.ENV_GREENTIC_TENANT: "acme",
        c.ENV_GREENTIC_TEAM: "core",
    }
    mount = {"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
    for list_name, index in (("containers", 0), ("containers", 1), ("initContainers", 0)):
        assert env_of(after, index, list_name) == expected_env  # kv mount/prefix are the defaults: not set
        assert after["spec"][list_name][index]["volumeMounts"] == [mount]
    assert after["spec"]["volumes"] == [
        {
            "name": c.VAULT_TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}
                ]
            },
        }
    ]
    assert after["metadata"]["annotations"] == {c.ANNOTATION_SECRETS_BACKEND: c.BACKEND_VAULT}
    assert "/metadata/annotations" in outcome.audit["patched"]


def test_worker_mutation_non_default_kv_and_team_role() -> None:
    """VAULT_KV_MOUNT / VAULT_KV_PREFIX appear only when not the default; {team} is filled into the role."""
    obj = pod()
    outcome = run(obj, namespace="acme-stage")
    env = env_of(patched(obj, outcome))
    assert env[c.ENV_VAULT_KV_MOUNT] == "kv"
    assert env[c.ENV_VAULT_KV_PREFIX] == "gt/stage"
    assert env[c.ENV_VAULT_ROLE] == "gtc-stage-acme-web"
    assert env[c.ENV_GREENTIC_TEAM] == "web"


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"serviceAccountName": "default"}, id="default"),
        pytest.param({"serviceAccountName": ""}, id="empty"),
        pytest.param({"serviceAccountName": None}, id="null"),
        pytest.param({}, id="absent"),
    ],
)
def test_worker_service_account_patched_when_empty_or_default(spec: dict[str, Any]) -> None:
    """Empty, null, absent or `default` becomes the badge."""
    obj = pod()
    del obj["spec"]["serviceAccountName"]
    obj["spec"].update(spec)
    after = patched(obj, run(obj))
    assert after["spec"]["serviceAccountName"] == BADGE


def test_deprecated_alias_is_patched_together() -> None:
    """spec.serviceAccount (deprecated alias) set to `default` is rewritten with serviceAccountName."""
    obj = pod(serviceAccount="default")
    after = patched(obj, run(obj))
    assert after["spec"]["serviceAccountName"] == BADGE
    assert after["spec"]["serviceAccount"] == BADGE


def test_existing_env_mounts_volumes_and_annotations_are_kept() -> None:
    """The patch appends; what the pod had stays in place."""
    obj = pod(
        containers=[
            container(
                env=[{"name": "LOG_LEVEL", "value": "debug"}],
                volumeMounts=[{"name": "data", "mountPath": "/data"}],
            )
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    obj["metadata"]["annotations"] = {"team.example/owner": "web"}
    after = patched(obj, run(obj))
    first = after["spec"]["containers"][0]
    assert first["env"][0] == {"name": "LOG_LEVEL", "value": "debug"}
    assert first["volumeMounts"][0] == {"name": "data", "mountPath": "/data"}
    assert after["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}
    assert after["metadata"]["annotations"] == {
        "team.example/owner": "web",
        c.ANNOTATION_SECRETS_BACKEND: c.BACKEND_VAULT,
    }


def _api_server_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server fills into what the webhook added."""
    result = copy.deepcopy(obj)
    for volume in result["spec"]["volumes"]:
        if "projected" in volume:
            volume["projected"]["defaultMode"] = 420
    for list_name in ("containers", "initContainers"):
        for item in result["spec"].get(list_name) or []:
            item["terminationMessagePath"] = "/dev/termination-log"
            item["imagePullPolicy"] = "IfNotPresent"
            for mount in item.get("volumeMounts") or []:
                mount.setdefault("readOnly", False)
                mount["mountPropagation"] = "None"
    result["spec"]["serviceAccount"] = result["spec"]["serviceAccountName"]
    return result


@pytest.mark.parametrize("defaulted", [False, True], ids=["as-patched", "after-api-server-defaults"])
@pytest.mark.parametrize("namespace", ["acme-prod", "acme-stage"])
def test_mutation_is_idempotent(defaulted: bool, namespace: str) -> None:
    """The mutated pod sent again (reinvocation) yields no patch, also after API-server defaulting."""
    obj = pod(containers=[container(), container("b")], initContainers=[container("i")])
    once = patched(obj, run(obj, namespace=namespace))
    again_input = _api_server_defaults(once) if defaulted else once
    again = run(again_input, namespace=namespace)
    assert "patch" not in response(again)
    assert again.decision == "allowed"
    assert run(again_input, "validate", namespace=namespace).decision == "allowed"


def test_only_pods_on_create_are_patched() -> None:
    """A Deployment never gets a patch; /validate never patches; a Pod UPDATE is not mutated."""
    obj = pod()
    assert "patch" not in response(run(controller("Deployment", obj)))
    assert "patch" not in response(run(obj, "validate"))
    assert "patch" not in response(run(obj, operation="UPDATE"))


# --- vault-settings-override ---------------------------------------------------------------------------

OVERRIDABLE = [
    (c.ENV_SECRETS_BACKEND, "vault"),
    (c.ENV_VAULT_ADDR, VAULT_ADDR),
    (c.ENV_VAULT_ROLE, "gtc-prod-acme"),
    (c.ENV_VAULT_TOKEN_PATH, TOKEN_PATH),
    (c.ENV_VAULT_KV_MOUNT, "secret"),
    (c.ENV_VAULT_KV_PREFIX, "greentic"),
    # Pinned to "false" in a TLS environment (never added): a pod cannot switch plain HTTP on.
    (c.ENV_VAULT_INSECURE_HTTP, "false"),
]


@pytest.mark.parametrize(("name", "configured"), OVERRIDABLE, ids=[n for n, _ in OVERRIDABLE])
@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"value": CANARY}, id="literal"),
        pytest.param({"valueFrom": {"configMapKeyRef": {"name": "cm", "key": CANARY}}}, id="valueFrom"),
    ],
)
@pytest.mark.parametrize("list_name", ["containers", "initContainers"])
def test_vault_settings_override(name: str, configured: str, entry: dict[str, Any], list_name: str) -> None:
    """The configured value replaces the pod's; a warning names container and variable, never the value."""
    spec: dict[str, Any] = {list_name: [container("app-1", env=[{"name": name, **entry}])]}
    obj = pod(**spec)
    if list_name == "initContainers":
        obj["spec"]["containers"] = [container()]
    outcome = run(obj)
    assert outcome.decision == "warned"
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert response(outcome)["allowed"] is True
    after = patched(obj, outcome)
    entries = [e for e in after["spec"][list_name][0]["env"] if e["name"] == name]
    assert entries == [{"name": name, "value": configured}]
    (warning,) = response(outcome)["warnings"]
    assert "app-1" in warning and name in warning
    assert f"spec.{list_name}[0].env[0]" in outcome.audit["messages"][0]
    assert_clean(outcome)


def test_vault_setting_equal_to_config_is_not_an_override() -> None:
    """A pod that already sets the configured value gets no warning and keeps its entry."""
    obj = pod(containers=[container(env=[{"name": c.ENV_VAULT_ADDR, "value": VAULT_ADDR}])])
    outcome = run(obj)
    assert outcome.rules == ()
    assert [
        e for e in patched(obj, outcome)["spec"]["containers"][0]["env"] if e["name"] == c.ENV_VAULT_ADDR
    ] == [{"name": c.ENV_VAULT_ADDR, "value": VAULT_ADDR}]


def test_value_from_next_to_the_configured_value_is_an_override() -> None:
    """valueFrom wins over nothing: an entry with the right value plus a valueFrom is still replaced."""
    entry = {
        "name": c.ENV_VAULT_ADDR,
        "value": VAULT_ADDR,
        "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}},
    }
    obj = pod(containers=[container(env=[entry])])
    outcome = run(obj)
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert patched(obj, outcome)["spec"]["containers"][0]["env"][0] == {
        "name": c.ENV_VAULT_ADDR,
        "value": VAULT_ADDR,
    }


def test_duplicate_entries_are_all_replaced() -> None:
    """Kubernetes lets the last duplicate win: every entry of the variable gets the configured value."""
    obj = pod(
        containers=[
            container(
                env=[
                    {"name": c.ENV_VAULT_ADDR, "value": VAULT_ADDR},
                    {"name": c.ENV_VAULT_ADDR, "value": CANARY},
                ]
            )
        ]
    )
    outcome = run(obj)
    values = [
        e["value"]
        for e in patched(obj, outcome)["spec"]["containers"][0]["env"]
        if e["name"] == c.ENV_VAULT_ADDR
    ]
    assert values == [VAULT_ADDR, VAULT_ADDR]
    assert_clean(outcome)


def test_override_on_validate_is_a_warning_not_a_denial() -> None:
    """/validate cannot patch: it warns that the setting differs, and still allows."""
    obj = patched(pod(), run(pod()))
    obj["spec"]["containers"][0]["env"][1]["value"] = CANARY  # VAULT_ADDR changed after our webhook
    outcome = run(obj, "validate")
    assert response(outcome)["allowed"] is True
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert "differs" in response(outcome)["warnings"][0]
    assert_clean(outcome)


def test_foreign_token_volume_and_mount_are_replaced() -> None:
    """A volume named like ours, or another volume on the token folder, is replaced (with a warning)."""
    obj = pod(
        containers=[container(volumeMounts=[{"name": "fake", "mountPath": TOKEN_DIR + "/"}])],
        volumes=[{"name": c.VAULT_TOKEN_VOLUME, "emptyDir": {}}, {"name": "fake", "emptyDir": {}}],
    )
    outcome = run(obj)
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert len(response(outcome)["warnings"]) == 2
    after = patched(obj, outcome)
    assert (
        after["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "vault"
    )
    assert after["spec"]["containers"][0]["volumeMounts"] == [
        {"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
    ]
    assert "patch" not in response(run(after))


@pytest.mark.parametrize(
    "inside",
    [
        TOKEN_PATH,  # a subPath file over the token
        TOKEN_DIR + "/vault-ca.crt",  # ... over where the CA is projected
        TOKEN_DIR + "/sub/dir",
        TOKEN_DIR + "//token",  # spellings the kernel resolves to the same place
        TOKEN_DIR + "/./token/",
        "/var/run/secrets/greentic/x/../vault/token",
    ],
)
def test_a_mount_inside_the_token_folder_is_removed(inside: str) -> None:
    """A mount inside the folder would hide what the kubelet projects there: the patch removes it."""
    obj = pod(
        containers=[
            container(
                volumeMounts=[
                    {"name": "data", "mountPath": "/data"},
                    {"name": "mine", "mountPath": inside, "subPath": "t"},
                    {"name": "data", "mountPath": TOKEN_DIR + "-other"},  # a sibling, not inside
                    {
                        "name": "data",
                        "mountPath": "/var/run/secrets/greentic",
                    },  # a parent: ours lands inside it
                ]
            )
        ],
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "mine", "emptyDir": {}}],
    )
    outcome = run(obj)
    assert outcome.decision == "warned"  # allowed, with the warning
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert response(outcome)["warnings"] == [
        f"vault-settings-override: container app: mount inside {TOKEN_DIR} removed"
    ]
    assert {"op": "remove", "path": "/spec/containers/0/volumeMounts/1"} in patch_of(outcome)
    after = patched(obj, outcome)
    assert after["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "data", "mountPath": TOKEN_DIR + "-other"},
        {"name": "data", "mountPath": "/var/run/secrets/greentic"},
        {"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
    ]
    assert "patch" not in response(run(after))
    assert run(after, "validate").rules == ()
    assert_clean(outcome)


def test_mounts_inside_the_folder_go_and_one_on_it_is_replaced_in_one_patch() -> None:
    """Several in one container: the foreign mount on the folder is replaced, every one inside removed."""
    obj = pod(
        containers=[
            container(
                volumeMounts=[
                    {"name": "a", "mountPath": TOKEN_PATH, "subPath": "t"},
                    {"name": "b", "mountPath": TOKEN_DIR + "/"},
                    {"name": "c", "mountPath": TOKEN_DIR + "/vault-ca.crt", "subPath": "ca"},
                ]
            ),
            container("clean"),
        ],
        initContainers=[container("init", volumeMounts=[{"name": "a", "mountPath": TOKEN_PATH}])],
        volumes=[{"name": name, "emptyDir": {}} for name in "abc"],
    )
    outcome = run(obj)
    ours = {"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
    after = patched(obj, outcome)
    assert after["spec"]["containers"][0]["volumeMounts"] == [ours]
    assert after["spec"]["containers"][1]["volumeMounts"] == [ours]
    assert after["spec"]["initContainers"][0]["volumeMounts"] == [ours]
    warnings = response(outcome)["warnings"]
    assert f"vault-settings-override: container app: mount inside {TOKEN_DIR} removed" in warnings
    assert f"vault-settings-override: container init: mount inside {TOKEN_DIR} removed" in warnings
    assert "patch" not in response(run(after))


def test_a_mount_inside_the_folder_warns_on_validate_and_in_a_template() -> None:
    """/validate cannot patch: it says the mount is not allowed; a Deployment is told it will be removed."""
    obj = pod(
        serviceAccountName=BADGE,
        containers=[container(volumeMounts=[{"name": "m", "mountPath": TOKEN_PATH, "subPath": "t"}])],
        volumes=[{"name": "m", "emptyDir": {}}],
    )
    validated = run(obj, "validate")
    assert f"container app: mount inside {TOKEN_DIR} is not allowed" in response(validated)["warnings"][0]
    templated = run(controller("Deployment", obj), kind="Deployment")
    assert f"container app: mount inside {TOKEN_DIR} will be removed" in response(templated)["warnings"][0]


# --- The Vault CA from a ConfigMap (environments.<env>.vault.caConfigMap; env "secure") ------------------

SECURE = "acme-secure"
TOKEN_SOURCE = {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}
CA_SOURCE = {"configMap": {"name": CA_CONFIG_MAP, "items": [{"key": CA_KEY, "path": "vault-ca.crt"}]}}
CA_VOLUME = {"name": c.VAULT_TOKEN_VOLUME, "projected": {"sources": [TOKEN_SOURCE, CA_SOURCE]}}


def test_ca_config_map_patch() -> None:
    """The exact patch: VAULT_CACERT after the token path; the CA projected beside the token, not optional."""
    outcome = run(pod(), namespace=SECURE)
    assert outcome.rules == ()
    env = [
        {"name": c.ENV_SECRETS_BACKEND, "value": "vault"},
        {"name": c.ENV_VAULT_ADDR, "value": VAULT_ADDR},
        {"name": c.ENV_VAULT_ROLE, "value": "gtc-secure-acme"},
        {"name": c.ENV_VAULT_TOKEN_PATH, "value": TOKEN_PATH},
        {"name": c.ENV_VAULT_CACERT, "value": CA_FILE},
        {"name": c.ENV_GREENTIC_ENV, "value": "secure"},
        {"name": c.ENV_GREENTIC_TENANT, "value": "acme"},
        {"name": c.ENV_GREENTIC_TEAM, "value": "core"},
    ]
    mount = {"name": c.VAULT_TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
    assert patch_of(outcome) == [
        {"op": "add", "path": "/spec/serviceAccountName", "value": BADGE},
        {"op": "add", "path": "/spec/containers/0/env", "value": env},
        {"op": "add", "path": "/spec/containers/0/volumeMounts", "value": [mount]},
        {"op": "add", "path": "/spec/volumes", "value": [CA_VOLUME]},
        {"op": "add", "path": "/metadata/annotations", "value": {c.ANNOTATION_SECRETS_BACKEND: "vault"}},
    ]


def test_ca_config_map_appends_to_existing_volumes() -> None:
    """A pod with volumes of its own gets the CA-carrying token volume appended, its own kept."""
    obj = pod(volumes=[{"name": "data", "emptyDir": {}}])
    ops = [op for op in patch_of(run(obj, namespace=SECURE)) if op["path"].startswith("/spec/volumes")]
    assert ops == [{"op": "add", "path": "/spec/volumes/-", "value": CA_VOLUME}]


@pytest.mark.parametrize("defaulted", [False, True], ids=["as-patched", "after-api-server-defaults"])
def test_ca_config_map_mutation_is_idempotent(defaulted: bool) -> None:
    """The patched pod with its CA source, sent again (reinvocation), yields an empty patch."""
    obj = pod(containers=[container(), container("b")], initContainers=[container("i")])
    once = patched(obj, run(obj, namespace=SECURE))
    again_input = _api_server_defaults(once) if defaulted else once
    again = run(again_input, namespace=SECURE)
    assert "patch" not in response(again)
    assert again.decision == "allowed" and again.rules == ()
    assert run(again_input, "validate", namespace=SECURE).rules == ()


def _sources(*sources: Any) -> dict[str, Any]:
    return {"name": c.VAULT_TOKEN_VOLUME, "projected": {"sources": list(sources)}}


def _ca(**fields: Any) -> dict[str, Any]:
    projection: dict[str, Any] = {"name": CA_CONFIG_MAP, "items": [{"key": CA_KEY, "path": "vault-ca.crt"}]}
    projection.update(fields)
    return {"configMap": projection}


TAMPERED_CA = [
    pytest.param(_sources(TOKEN_SOURCE), id="ca-missing"),
    pytest.param(_sources(TOKEN_SOURCE, _ca(name="attacker-ca")), id="other-config-map"),
    pytest.param(
        _sources(TOKEN_SOURCE, _ca(items=[{"key": "other", "path": "vault-ca.crt"}])), id="other-key"
    ),
    pytest.param(_sources(TOKEN_SOURCE, _ca(items=[{"key": CA_KEY, "path": "ca.pem"}])), id="other-path"),
    pytest.param(
        _sources(TOKEN_SOURCE, _ca(items=[{"key": CA_KEY, "path": "vault-ca.crt", "mode": 0o666}])),
        id="item-mode",
    ),
    pytest.param(_sources(TOKEN_SOURCE, _ca(items=[])), id="no-items"),
    pytest.param(_sources(TOKEN_SOURCE, _ca(optional=True)), id="optional"),
    pytest.param(_sources(TOKEN_SOURCE, {"secret": {"name": "vault-ca"}}), id="secret-not-config-map"),
    pytest.param(_sources(TOKEN_SOURCE, {**_ca(), "secret": {"name": "x"}}), id="two-kinds-in-one-source"),
    pytest.param(_sources(TOKEN_SOURCE, _ca(), _ca(name="extra")), id="extra-source"),
    pytest.param(_sources(_ca(), TOKEN_SOURCE), id="swapped"),
]


@pytest.mark.parametrize("volume", TAMPERED_CA)
def test_tampered_ca_source_is_replaced(volume: dict[str, Any]) -> None:
    """A token volume whose CA source is not exactly ours is replaced with ours, with a warning."""
    obj = pod(volumes=[{"name": "data", "emptyDir": {}}, volume])
    outcome = run(obj, namespace=SECURE)
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert f"volume {c.VAULT_TOKEN_VOLUME} replaced" in response(outcome)["warnings"][0]
    volume_ops = [op for op in patch_of(outcome) if op["path"].startswith("/spec/volumes")]
    assert volume_ops == [{"op": "replace", "path": "/spec/volumes/1", "value": CA_VOLUME}]
    after = patched(obj, outcome)
    assert "patch" not in response(run(after, namespace=SECURE))
    # /validate of a patched pod whose CA source was changed afterwards says so, and still allows.
    after["spec"]["volumes"][1] = volume
    validated = run(after, "validate", namespace=SECURE)
    assert validated.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,) and response(validated)["allowed"] is True
    assert "differs" in response(validated)["warnings"][0]


def test_ca_source_that_is_not_an_object_is_replaced() -> None:
    """/mutate replaces a token volume with a malformed second source (it judges the pod after the patch)."""
    obj = pod(volumes=[_sources(TOKEN_SOURCE, "vault-ca")])
    outcome = run(obj, namespace=SECURE)
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert patched(obj, outcome)["spec"]["volumes"] == [CA_VOLUME]


def test_ca_volume_in_an_environment_without_ca_is_replaced() -> None:
    """Where no CA is configured, our token volume carries no CA source: one that does is replaced."""
    obj = pod(volumes=[CA_VOLUME])
    outcome = run(obj)
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert patched(obj, outcome)["spec"]["volumes"] == [_sources(TOKEN_SOURCE)]


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"value": "/tmp/attacker-ca.pem"}, id="literal"),
        pytest.param({"valueFrom": {"configMapKeyRef": {"name": "cm", "key": CANARY}}}, id="valueFrom"),
        pytest.param({"value": CA_FILE, "valueFrom": {"fieldRef": {"fieldPath": "x"}}}, id="both"),
    ],
)
@pytest.mark.parametrize("list_name", ["containers", "initContainers"])
def test_pod_setting_vault_cacert_is_overridden(entry: dict[str, Any], list_name: str) -> None:
    """VAULT_CACERT of the pod is replaced like VAULT_ADDR: the worker trusts only the configured CA."""
    spec: dict[str, Any] = {list_name: [container("app-1", env=[{"name": c.ENV_VAULT_CACERT, **entry}])]}
    obj = pod(**spec)
    if list_name == "initContainers":
        obj["spec"]["containers"] = [container()]
    outcome = run(obj, namespace=SECURE)
    assert outcome.decision == "warned"
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    (warning,) = response(outcome)["warnings"]
    assert "app-1" in warning and c.ENV_VAULT_CACERT in warning and "/tmp" not in warning
    after = patched(obj, outcome)
    entries = [e for e in after["spec"][list_name][0]["env"] if e["name"] == c.ENV_VAULT_CACERT]
    assert entries == [{"name": c.ENV_VAULT_CACERT, "value": CA_FILE}]
    assert "patch" not in response(run(after, namespace=SECURE))
    assert_clean(outcome)


def test_pod_vault_cacert_equal_to_the_configured_file_is_kept() -> None:
    """A pod that already names the projected file gets no warning and no second entry."""
    obj = pod(containers=[container(env=[{"name": c.ENV_VAULT_CACERT, "value": CA_FILE}])])
    outcome = run(obj, namespace=SECURE)
    assert outcome.rules == ()
    env = patched(obj, outcome)["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == c.ENV_VAULT_CACERT] == [
        {"name": c.ENV_VAULT_CACERT, "value": CA_FILE}
    ]


def test_without_ca_config_map_vault_cacert_is_the_pods_own() -> None:
    """No caConfigMap: VAULT_CACERT is neither added nor policed (the image's CA, as before)."""
    assert c.ENV_VAULT_CACERT not in env_of(patched(pod(), run(pod())))
    obj = pod(containers=[container(env=[{"name": c.ENV_VAULT_CACERT, "value": "/etc/ssl/own.pem"}])])
    outcome = run(obj)
    assert outcome.rules == ()
    assert env_of(patched(obj, outcome))[c.ENV_VAULT_CACERT] == "/etc/ssl/own.pem"


# --- Plain-http Vault by explicit choice (environments.<env>.vault.insecureHttp) ------------------------

PLAIN = "acme-plain"
PLAIN_ADDR = "http://vault.mesh.svc:8200"


def _plain_http_config() -> Config:
    document = copy.deepcopy(CONFIG_DOCUMENT)
    document["environments"]["plain"] = {
        "secretsPack": c.PACK_VAULT,
        "vault": {"addr": PLAIN_ADDR, "role": "gtc-{env}-{tenant}-{team}", "insecureHttp": True},
    }
    document["namespaces"][PLAIN] = {"env": "plain", "tenant": "acme", "team": "core"}
    return parse_config(document)


PLAIN_CONFIG = _plain_http_config()
PLAIN_BINDINGS = StaticBindings(PLAIN_CONFIG.namespaces)


def run_plain(obj: dict[str, Any], endpoint: Endpoint = "mutate") -> Outcome:
    return run(obj, endpoint, config=PLAIN_CONFIG, bindings=PLAIN_BINDINGS, namespace=PLAIN)


def test_insecure_http_patch() -> None:
    """The http:// addr and GREENTIC_VAULT_INSECURE_HTTP=true, right after the token path; no CA."""
    outcome = run_plain(pod())
    assert outcome.rules == ()
    (env,) = [op["value"] for op in patch_of(outcome) if op["path"] == "/spec/containers/0/env"]
    assert env == [
        {"name": c.ENV_SECRETS_BACKEND, "value": "vault"},
        {"name": c.ENV_VAULT_ADDR, "value": PLAIN_ADDR},
        {"name": c.ENV_VAULT_ROLE, "value": "gtc-plain-acme-core"},
        {"name": c.ENV_VAULT_TOKEN_PATH, "value": TOKEN_PATH},
        {"name": c.ENV_VAULT_INSECURE_HTTP, "value": "true"},
        {"name": c.ENV_GREENTIC_ENV, "value": "plain"},
        {"name": c.ENV_GREENTIC_TENANT, "value": "acme"},
        {"name": c.ENV_GREENTIC_TEAM, "value": "core"},
    ]


@pytest.mark.parametrize("defaulted", [False, True], ids=["as-patched", "after-api-server-defaults"])
def test_insecure_http_mutation_is_idempotent(defaulted: bool) -> None:
    """The patched pod sent again (reinvocation) yields an empty patch and passes /validate."""
    obj = pod(containers=[container(), container("b")], initContainers=[container("i")])
    once = patched(obj, run_plain(obj))
    again_input = _api_server_defaults(once) if defaulted else once
    again = run_plain(again_input)
    assert "patch" not in response(again)
    assert again.decision == "allowed" and again.rules == ()
    assert run_plain(again_input, "validate").rules == ()


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"value": "false"}, id="false"),
        pytest.param({"value": "TRUE"}, id="other-spelling"),
        pytest.param({"valueFrom": {"configMapKeyRef": {"name": "cm", "key": CANARY}}}, id="valueFrom"),
    ],
)
def test_pod_setting_insecure_http_is_overridden(entry: dict[str, Any]) -> None:
    """The flag is the config's: a pod's own entry is replaced with "true", with a warning naming it."""
    obj = pod(containers=[container("app-1", env=[{"name": c.ENV_VAULT_INSECURE_HTTP, **entry}])])
    outcome = run_plain(obj)
    assert (outcome.decision, outcome.rules) == ("warned", (c.RULE_VAULT_SETTINGS_OVERRIDE,))
    (warning,) = response(outcome)["warnings"]
    assert "app-1" in warning and c.ENV_VAULT_INSECURE_HTTP in warning
    after = patched(obj, outcome)
    entries = [e for e in after["spec"]["containers"][0]["env"] if e["name"] == c.ENV_VAULT_INSECURE_HTTP]
    assert entries == [{"name": c.ENV_VAULT_INSECURE_HTTP, "value": "true"}]
    assert "patch" not in response(run_plain(after))
    # Changed again after the patch: /validate says it differs (a warning, like VAULT_ADDR).
    after["spec"]["containers"][0]["env"][0] = {"name": c.ENV_VAULT_INSECURE_HTTP, **entry}
    validated = run_plain(after, "validate")
    assert validated.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,) and response(validated)["allowed"] is True
    assert_clean(outcome)


def test_tls_environment_never_adds_insecure_http_and_pins_a_pods_true_to_false() -> None:
    """Without insecureHttp the flag is not injected; a pod that sets it to true gets "false"."""
    assert c.ENV_VAULT_INSECURE_HTTP not in env_of(patched(pod(), run(pod())))
    obj = pod(containers=[container(env=[{"name": c.ENV_VAULT_INSECURE_HTTP, "value": "true"}])])
    outcome = run(obj)
    assert outcome.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert env_of(patched(obj, outcome))[c.ENV_VAULT_INSECURE_HTTP] == "false"
    kept = pod(containers=[container(env=[{"name": c.ENV_VAULT_INSECURE_HTTP, "value": "false"}])])
    assert run(kept).rules == ()


def test_mutate_judges_the_pod_after_its_patch() -> None:
    """A forbidden reference that the patch itself replaces is gone on /mutate, still there on /validate."""
    obj = pod(
        containers=[
            container(
                env=[
                    {
                        "name": c.ENV_VAULT_ADDR,
                        "valueFrom": {"secretKeyRef": {"name": DEV_SECRET, "key": "a"}},
                    }
                ]
            )
        ],
        volumes=[{"name": c.VAULT_TOKEN_VOLUME, "secret": {"secretName": DEV_SECRET}}],
    )
    mutated = run(obj)
    assert mutated.decision == "warned" and mutated.rules == (c.RULE_VAULT_SETTINGS_OVERRIDE,)
    assert run(patched(obj, mutated), "validate").decision == "allowed"
    as_sent = run(obj, "validate")
    assert c.RULE_DEV_SECRET_REFERENCE in as_sent.rules and as_sent.decision == "denied"


@pytest.mark.parametrize("wrap", [pytest.param(False, id="pod"), pytest.param(True, id="deployment")])
def test_only_the_entries_the_patch_replaces_stop_counting(wrap: bool) -> None:
    """Next to a replaced reference, a reference the patch keeps still denies, named by its own path."""
    dev_ref = {"secretKeyRef": {"name": DEV_SECRET, "key": "a"}}
    obj = pod(
        containers=[
            container(env=[{"name": "APP_KEY", "valueFrom": dev_ref}]),
            container(
                "side",
                env=[
                    {"name": c.ENV_VAULT_ADDR, "valueFrom": dev_ref},
                    {"name": "APP_KEY", "valueFrom": dev_ref},
                ],
            ),
        ],
        volumes=[
            {"name": c.VAULT_TOKEN_VOLUME, "secret": {"secretName": DEV_SECRET}},
            {"name": "legacy", "secret": {"secretName": DEV_SECRET}},
        ],
    )
    outcome = run(controller("Deployment", obj) if wrap else obj)
    assert outcome.decision == "denied"
    prefix = "spec.template." if wrap else ""
    message = outcome.review["response"]["status"]["message"]
    expected = ", ".join(
        f"{prefix}spec.{path}"
        for path in (
            "containers[0].env[0].valueFrom.secretKeyRef.name",
            "containers[1].env[1].valueFrom.secretKeyRef.name",
            "volumes[1].secret.secretName",
        )
    )
    assert f"at {expected}" in message
    assert "env[0].valueFrom" not in message.split("containers[1]")[1]
    assert "volumes[0]" not in message


# --- tenant-mismatch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [c.ENV_GREENTIC_ENV, c.ENV_GREENTIC_TENANT, c.ENV_GREENTIC_TEAM])
@pytest.mark.parametrize(
    ("entry", "list_name"),
    [
        pytest.param({"value": CANARY}, "containers", id="literal"),
        pytest.param({"value": CANARY}, "initContainers", id="init-container"),
        pytest.param(
            {"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}, "containers", id="valueFrom"
        ),
        pytest.param({}, "containers", id="empty"),
    ],
)
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_tenant_mismatch(name: str, entry: dict[str, Any], list_name: str, endpoint: Endpoint) -> None:
    """An identity variable different from the namespace binding is denied on both endpoints, value unsaid."""
    spec: dict[str, Any] = {list_name: [container("app", env=[{"name": name, **entry}])]}
    obj = pod(serviceAccountName=BADGE, **spec)
    if list_name == "initContainers":
        obj["spec"]["containers"] = [container("main")]
    outcome = run(obj, endpoint)
    message = denial(outcome)
    assert c.RULE_TENANT_MISMATCH in outcome.rules
    assert name in message and f"spec.{list_name}[0].env[0]" in message
    assert response(outcome)["status"]["code"] == 403
    assert_clean(outcome)


def test_identity_matching_the_binding_passes() -> None:
    """GREENTIC_ENV/TENANT/TEAM equal to the binding are fine and not duplicated."""
    identity = [
        {"name": c.ENV_GREENTIC_ENV, "value": "prod"},
        {"name": c.ENV_GREENTIC_TENANT, "value": "acme"},
        {"name": c.ENV_GREENTIC_TEAM, "value": "core"},
    ]
    obj = pod(containers=[container(env=identity)])
    outcome = run(obj)
    assert outcome.decision == "allowed"
    names = [e["name"] for e in patched(obj, outcome)["spec"]["containers"][0]["env"]]
    assert names.count(c.ENV_GREENTIC_TENANT) == 1


# --- dev-secret-reference -----------------------------------------------------------------------------

REF = {"name": DEV_SECRET}


def _env_ref() -> dict[str, Any]:
    return {
        "env": [
            {"name": "OK", "value": "1"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {**REF, "key": "t"}}},
        ]
    }


def _env_from_ref() -> dict[str, Any]:
    return {"envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": dict(REF)}]}


LOCATIONS = [
    pytest.param(
        "containers", _env_ref, "spec.containers[0].env[1].valueFrom.secretKeyRef.name", id="containers-env"
    ),
    pytest.param(
        "containers", _env_from_ref, "spec.containers[0].envFrom[1].secretRef.name", id="containers-envFrom"
    ),
    pytest.param(
        "initContainers", _env_ref, "spec.initContainers[0].env[1].valueFrom.secretKeyRef.name", id="init-env"
    ),
    pytest.param(
        "initContainers", _env_from_ref, "spec.initContainers[0].envFrom[1].secretRef.name", id="init-envFrom"
    ),
    pytest.param(
        "ephemeralContainers",
        _env_ref,
        "spec.ephemeralContainers[0].env[1].valueFrom.secretKeyRef.name",
        id="ephemeral-env",
    ),
    pytest.param(
        "ephemeralContainers",
        _env_from_ref,
        "spec.ephemeralContainers[0].envFrom[1].secretRef.name",
        id="ephemeral-envFrom",
    ),
]

VOLUME_LOCATIONS = [
    pytest.param(
        {"name": "s", "secret": {"secretName": DEV_SECRET}},
        "spec.volumes[1].secret.secretName",
        id="volume-secret",
    ),
    pytest.param(
        {"name": "p", "projected": {"sources": [{"configMap": {"name": "cm"}}, {"secret": dict(REF)}]}},
        "spec.volumes[1].projected.sources[1].secret.name",
        id="volume-projected",
    ),
]


@pytest.mark.parametrize(("list_name", "fields", "path"), LOCATIONS)
def test_forbidden_reference_locations_in_containers(list_name: str, fields: Any, path: str) -> None:
    """Each container location is found with its exact field path."""
    spec = {"containers": [container()], list_name: [container("x", **fields())]}
    assert forbidden_references(spec, CONFIG.forbidden_secrets, "") == [(path, DEV_SECRET)]


@pytest.mark.parametrize(("volume", "path"), VOLUME_LOCATIONS)
def test_forbidden_reference_locations_in_volumes(volume: dict[str, Any], path: str) -> None:
    """Each volume location is found with its exact field path."""
    spec = {"containers": [container()], "volumes": [{"name": "e", "emptyDir": {}}, volume]}
    assert forbidden_references(spec, CONFIG.forbidden_secrets, "") == [(path, DEV_SECRET)]


def test_forbidden_reference_needs_the_exact_name() -> None:
    """Names that only look alike, and other Secrets, are not references to the forbidden Secret."""
    spec = {
        "containers": [
            container(
                envFrom=[
                    {"secretRef": {"name": DEV_SECRET + "-2"}},
                    {"secretRef": {"name": "GTC-DEV-SECRETS"}},
                ]
            )
        ],
        "volumes": [{"name": "v", "secret": {"secretName": "app-tls"}}],
    }
    assert forbidden_references(spec, CONFIG.forbidden_secrets, "") == []


@pytest.mark.parametrize("component", ["worker", "router", None])
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_dev_secret_reference_denies_every_component_listing_every_path(
    component: str | None, endpoint: Endpoint
) -> None:
    """Worker, router or other pod: denied, and the message lists every location."""
    obj = pod(
        component,
        containers=[container(**_env_from_ref()), container("b", **_env_ref())],
        volumes=[{"name": "s", "secret": {"secretName": "legacy-secrets"}}],
        serviceAccountName=BADGE if component == "worker" else "default",
    )
    outcome = run(obj, endpoint)
    message = denial(outcome)
    assert outcome.rules == (c.RULE_DEV_SECRET_REFERENCE,)
    for path in (
        "spec.containers[0].envFrom[1].secretRef.name",
        "spec.containers[1].env[1].valueFrom.secretKeyRef.name",
        "spec.volumes[0].secret.secretName",
    ):
        assert path in message
    assert DEV_SECRET in message and "legacy-secrets" in message
    assert "patch" not in response(outcome)


# --- worker-service-account and router-badge ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "endpoint", "denied"),
    [
        pytest.param({"serviceAccountName": "default"}, "mutate", False, id="default-mutate-patched"),
        pytest.param({"serviceAccountName": "default"}, "validate", True, id="default-validate"),
        pytest.param({"serviceAccountName": ""}, "validate", True, id="empty-validate"),
        pytest.param({"serviceAccountName": "app-sa"}, "mutate", True, id="other-mutate"),
        pytest.param({"serviceAccountName": "app-sa"}, "validate", True, id="other-validate"),
        pytest.param(
            {"serviceAccountName": "", "serviceAccount": "app-sa"}, "mutate", True, id="alias-other"
        ),
        pytest.param({"serviceAccountName": BADGE}, "validate", False, id="badge-validate"),
    ],
)
def test_worker_service_account(spec: dict[str, Any], endpoint: Endpoint, denied: bool) -> None:
    """A worker that does not run as the badge after mutation is denied (on /validate also `default`)."""
    obj = patched(pod(), run(pod())) if endpoint == "validate" else pod()
    obj["spec"].pop("serviceAccount", None)
    obj["spec"].update(spec)
    outcome = run(obj, endpoint)
    assert (c.RULE_WORKER_SERVICE_ACCOUNT in outcome.rules) is denied
    assert response(outcome)["allowed"] is not denied
    if denied:
        assert BADGE in denial(outcome)


def test_worker_service_account_explicit_other_is_not_overwritten() -> None:
    """The webhook never replaces an explicit ServiceAccount; it denies instead."""
    outcome = run(pod(serviceAccountName="app-sa"))
    assert "app-sa" in denial(outcome)
    assert "patch" not in response(outcome)


@pytest.mark.parametrize(
    ("spec", "denied"),
    [
        pytest.param({"serviceAccountName": BADGE}, True, id="badge"),
        pytest.param({"serviceAccountName": "", "serviceAccount": BADGE}, True, id="badge-through-alias"),
        pytest.param({"serviceAccountName": "default"}, False, id="default"),
        pytest.param({"serviceAccountName": "router"}, False, id="own-sa"),
    ],
)
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_router_badge(spec: dict[str, Any], denied: bool, endpoint: Endpoint) -> None:
    """The router is never mutated and is denied when it asks for the worker's badge."""
    obj = pod("router")
    obj["spec"].update(spec)
    outcome = run(obj, endpoint)
    assert "patch" not in response(outcome)
    assert (outcome.rules == (c.RULE_ROUTER_BADGE,)) is denied
    assert response(outcome)["allowed"] is not denied
    assert outcome.audit["component"] == "router"


def test_other_pods_in_a_vault_namespace_are_untouched() -> None:
    """A pod that is neither worker nor router is only checked for forbidden references."""
    outcome = run(pod(None, serviceAccountName=BADGE))
    assert outcome.decision == "allowed" and "patch" not in response(outcome)
    assert outcome.audit["component"] == "other"


# --- Namespaces: unknown pack, dev-store, unbound, not ready -----------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        pytest.param("acme-odd", "unknown secrets pack greentic.secrets.unheard-of", id="unknown-pack"),
        pytest.param("acme-ghost", "environment ghost, which is not configured", id="undefined-environment"),
    ],
)
def test_unknown_secrets_pack_denies_workers_only(namespace: str, expected: str) -> None:
    """Fail closed for workers; routers and other pods pass untouched."""
    outcome = run(pod(), namespace=namespace)
    assert outcome.rules == (c.RULE_UNKNOWN_SECRETS_PACK,)
    assert expected in denial(outcome)
    for component in ("router", None):
        other = run(pod(component, containers=[container(**_env_from_ref())]), namespace=namespace)
        assert other.decision == "allowed" and "patch" not in response(other)


@pytest.mark.parametrize("namespace", ["acme-dev", "not-bound"])
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_dev_store_and_unbound_namespaces_are_untouched(namespace: str, endpoint: Endpoint) -> None:
    """Even a worker referencing the dev Secret with a foreign ServiceAccount passes unpatched."""
    obj = pod(containers=[container(**_env_from_ref())], serviceAccountName="app-sa")
    outcome = run(obj, endpoint, namespace=namespace)
    assert outcome.decision == "allowed" and outcome.rules == ()
    assert "patch" not in response(outcome)


def test_bindings_not_ready_refuses_workers_with_a_retriable_message() -> None:
    """Until the namespace cache has synced: workers 503 with 'retry', routers and other pods pass."""
    outcome = run(pod(), bindings=NotReadyBindings())
    assert outcome.rules == (c.RULE_BINDINGS_NOT_READY,)
    status = response(outcome)["status"]
    assert status["code"] == 503 and "retry" in status["message"]
    for component in ("router", None):
        assert run(pod(component), bindings=NotReadyBindings()).decision == "allowed"
    deployment = run(controller("Deployment", pod()), bindings=NotReadyBindings())
    assert deployment.rules == (c.RULE_BINDINGS_NOT_READY,)


def test_static_binding_answers_while_the_cluster_cache_is_not_ready() -> None:
    """LayeredBindings: a static binding is used even though the cluster source is not ready."""
    layered = LayeredBindings(
        [StaticBindings({"acme-prod": NamespaceBinding("prod", "acme", "core")}), NotReadyBindings()]
    )
    assert run(pod(), bindings=layered).decision == "allowed"
    assert run(pod(), bindings=layered, namespace="elsewhere").rules == (c.RULE_BINDINGS_NOT_READY,)


# --- Operations, subresources, deletion --------------------------------------------------------------------


def test_delete_and_connect_are_always_allowed() -> None:
    """DELETE and CONNECT pass without looking at the object."""
    bad = pod(containers=[container(**_env_from_ref())])
    assert run(None, operation="DELETE").decision == "allowed"
    assert run(bad, operation="DELETE", bindings=NotReadyBindings()).decision == "allowed"
    assert run({"kind": "PodExecOptions"}, operation="CONNECT", kind="PodExecOptions").decision == "allowed"


@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_ephemeral_containers_are_checked_for_forbidden_references(endpoint: Endpoint) -> None:
    """pods/ephemeralcontainers UPDATE: dev-secret-reference applies, nothing else, no patch."""
    running = patched(pod(), run(pod()))
    running["spec"]["ephemeralContainers"] = [container("debug", **_env_from_ref())]
    outcome = run(running, endpoint, operation="UPDATE", sub_resource="ephemeralcontainers")
    assert "spec.ephemeralContainers[0].envFrom[1].secretRef.name" in denial(outcome)
    running["spec"]["ephemeralContainers"] = [container("debug")]
    running["spec"]["serviceAccountName"] = "default"  # not judged on this subresource
    clean = run(running, endpoint, operation="UPDATE", sub_resource="ephemeralcontainers")
    assert clean.decision == "allowed" and "patch" not in response(clean)


def test_updates_of_objects_being_deleted_are_never_denied() -> None:
    """deletionTimestamp set: finalizers and controllers are never blocked."""
    bad = pod(containers=[container(**_env_from_ref())])
    bad["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert run(bad, operation="UPDATE", sub_resource="ephemeralcontainers").decision == "allowed"
    deployment = controller("Deployment", pod(containers=[container(**_env_from_ref())]))
    deployment["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert run(deployment, operation="UPDATE").decision == "allowed"
    assert run(deployment, operation="CREATE").decision == "denied"


def test_pod_update_and_other_subresources_pass() -> None:
    """A plain Pod UPDATE, pods/status, pods/binding are not judged."""
    bad = pod(containers=[container(**_env_from_ref())])
    assert run(bad, operation="UPDATE").decision == "allowed"
    assert run(bad, operation="UPDATE", sub_resource="status").decision == "allowed"
    assert run({"kind": "Binding"}, kind="Binding", sub_resource="binding").decision == "allowed"


def test_unrelated_kinds_pass() -> None:
    """ConfigMaps, Services and a Deployment of another API group are none of our business."""
    assert run({"kind": "ConfigMap", "data": {"k": CANARY}}, kind="ConfigMap").decision == "allowed"
    fake = controller("Deployment", pod(containers=[container(**_env_from_ref())]))
    assert run(fake, group="example.com").decision == "allowed"


# --- Workload controllers -------------------------------------------------------------------------------

TEMPLATE_PATHS = [
    ("Deployment", "spec.template."),
    ("StatefulSet", "spec.template."),
    ("DaemonSet", "spec.template."),
    ("ReplicaSet", "spec.template."),
    ("Job", "spec.template."),
    ("CronJob", "spec.jobTemplate.spec.template."),
]


@pytest.mark.parametrize(("kind", "prefix"), TEMPLATE_PATHS, ids=[k for k, _ in TEMPLATE_PATHS])
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_controllers_are_judged_by_their_pod_template(
    kind: str, prefix: str, operation: str, endpoint: Endpoint
) -> None:
    """Deny rules apply to the template with real field paths; a default-SA worker template passes."""
    bad = controller(kind, pod(containers=[container(**_env_from_ref())], serviceAccountName="app-sa"))
    outcome = run(bad, endpoint, operation=operation)
    message = denial(outcome)
    assert f"{prefix}spec.containers[0].envFrom[1].secretRef.name" in message
    assert set(outcome.rules) == {c.RULE_DEV_SECRET_REFERENCE, c.RULE_WORKER_SERVICE_ACCOUNT}
    good = run(controller(kind, pod()), endpoint, operation=operation)
    assert good.decision == "allowed" and "patch" not in response(good)
    assert good.audit["component"] == "worker"


def test_controller_template_vault_override_and_tenant_mismatch() -> None:
    """A template overriding VAULT_ADDR gets a warning; a foreign tenant is denied at apply time."""
    overriding = controller(
        "Deployment", pod(containers=[container(env=[{"name": c.ENV_VAULT_ADDR, "value": CANARY}])])
    )
    outcome = run(overriding)
    assert outcome.decision == "warned" and "will be replaced" in response(outcome)["warnings"][0]
    assert_clean(outcome)
    foreign = controller(
        "Job", pod(containers=[container(env=[{"name": c.ENV_GREENTIC_TENANT, "value": "other"}])])
    )
    assert run(foreign).rules == (c.RULE_TENANT_MISMATCH,)


def test_router_template_with_badge_is_denied() -> None:
    """router-badge applies to a router Deployment."""
    outcome = run(controller("Deployment", pod("router", serviceAccountName=BADGE)), "validate")
    assert outcome.rules == (c.RULE_ROUTER_BADGE,)


def test_controller_status_subresource_passes() -> None:
    """deployments/status updates are not judged."""
    bad = controller("Deployment", pod(containers=[container(**_env_from_ref())]))
    assert run(bad, operation="UPDATE", sub_resource="status").decision == "allowed"


# --- Enforcement and dryRun ------------------------------------------------------------------------------


def _violating_worker() -> dict[str, Any]:
    return pod(
        containers=[
            container(
                env=[
                    {"name": c.ENV_VAULT_ADDR, "value": CANARY},
                    {"name": c.ENV_GREENTIC_TENANT, "value": CANARY},
                ],
                **_env_from_ref(),
            )
        ]
    )


def test_enforcement_warn_turns_denials_into_warnings() -> None:
    """warn: allowed and patched, each denial is a warning, decision warned."""
    obj = _violating_worker()
    outcome = run(obj, namespace="acme-stage")
    assert response(outcome)["allowed"] is True
    assert outcome.decision == "warned"
    assert set(outcome.rules) == {
        c.RULE_VAULT_SETTINGS_OVERRIDE,
        c.RULE_TENANT_MISMATCH,
        c.RULE_DEV_SECRET_REFERENCE,
    }
    warnings = " ".join(response(outcome)["warnings"])
    assert c.RULE_TENANT_MISMATCH in warnings and c.RULE_DEV_SECRET_REFERENCE in warnings
    assert patch_of(outcome)
    assert outcome.audit["enforcement"] == "warn"
    assert_clean(outcome)


def test_enforcement_dryrun_only_records() -> None:
    """dryrun: allowed, no warning for the denials; the audit record carries the rules and messages."""
    obj = pod(containers=[container(**_env_from_ref())])
    outcome = run(obj, namespace="acme-canary")
    assert response(outcome)["allowed"] is True
    assert "warnings" not in response(outcome)
    assert outcome.decision == "allowed"
    assert outcome.rules == (c.RULE_DEV_SECRET_REFERENCE,)
    assert outcome.audit["enforcement"] == "dryrun"
    assert "spec.containers[0].envFrom[1].secretRef.name" in outcome.audit["messages"][0]
    assert response(outcome)["auditAnnotations"]["rules"] == c.RULE_DEV_SECRET_REFERENCE


@pytest.mark.parametrize("namespace", ["acme-prod", "acme-stage", "acme-canary"])
def test_dry_run_requests_get_the_same_decision(namespace: str) -> None:
    """request.dryRun changes nothing in the answer, only the dry_run flag and the audit field."""
    obj = _violating_worker()
    real = run(obj, namespace=namespace)
    dry = run(obj, namespace=namespace, dry_run=True)
    assert dry.review == real.review
    assert (dry.decision, dry.rules) == (real.decision, real.rules)
    assert dry.dry_run is True and dry.audit["dryRun"] is True and real.dry_run is False


# --- Malformed objects --------------------------------------------------------------------------------------

INVALID = [
    pytest.param(
        lambda p: p["spec"].update(containers="app"), "spec.containers: expected a list", id="containers-str"
    ),
    pytest.param(
        lambda p: p["spec"].update(containers=["app"]),
        "spec.containers[0]: expected an object",
        id="container-str",
    ),
    pytest.param(
        lambda p: p["spec"]["containers"][0].update(env={"A": "b"}), "spec.containers[0].env", id="env-map"
    ),
    pytest.param(
        lambda p: p["spec"]["containers"][0].update(env=[{"value": "x"}]), "env[0].name", id="env-no-name"
    ),
    pytest.param(lambda p: p["spec"].update(volumes="x"), "spec.volumes: expected a list", id="volumes-str"),
    pytest.param(lambda p: p.update(spec="x"), "spec: expected an object", id="spec-str"),
    pytest.param(
        lambda p: p["metadata"].update(labels=["a"]), "metadata.labels: expected an object", id="labels-list"
    ),
    pytest.param(lambda p: p["spec"].update(serviceAccountName=7), "spec.serviceAccountName", id="sa-number"),
    pytest.param(
        lambda p: p["spec"]["containers"][0].update(envFrom=[{"secretRef": {"name": ["x"]}}]),
        "spec.containers[0].envFrom[0].secretRef.name: expected a string",
        id="ref-name-list",
    ),
]


@pytest.mark.parametrize(("breaker", "expected"), INVALID)
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_malformed_object_is_a_well_formed_denial(breaker: Any, expected: str, endpoint: Endpoint) -> None:
    """A pod of the wrong shape where a rule looks: denied with invalid-object (422), not a request error."""
    obj = pod()
    breaker(obj)
    outcome = run(obj, endpoint)
    assert outcome.rules == (c.RULE_INVALID_OBJECT,)
    assert expected in denial(outcome)
    assert response(outcome)["status"]["code"] == 422
    assert run(obj, endpoint, namespace="not-bound").decision == "allowed"


def test_malformed_controller_template() -> None:
    """A Deployment without a template in a Vault namespace is invalid-object, naming spec.template."""
    outcome = run({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}, "spec": {}})
    assert "spec.template: expected an object" in denial(outcome)


# --- Classification and messages ---------------------------------------------------------------------------


def test_classify_matchlabels() -> None:
    """All selector labels must match; a pod matching both selectors is a worker."""
    selectors = CONFIG.selectors
    assert classify({"greentic.ai/component": "worker", "x": "y"}, selectors) == "worker"
    assert classify({"greentic.ai/component": "router"}, selectors) == "router"
    assert classify({"greentic.ai/component": "Worker"}, selectors) == "other"
    assert classify({}, selectors) == "other"


def test_hostile_container_names_are_shown_safely() -> None:
    """Names from the object are ASCII-only and shortened in warnings."""
    obj = pod(containers=[container("é\n" + "x" * 300, env=[{"name": c.ENV_VAULT_ADDR, "value": CANARY}])])
    outcome = run(obj)
    (warning,) = response(outcome)["warnings"]
    assert warning.isascii() and "\n" not in warning and len(warning) <= 120
    assert c.ENV_VAULT_ADDR in warning
    assert_clean(outcome)


def test_many_warnings_are_capped() -> None:
    """Past ten warnings, one line points at the audit log; the audit keeps every message."""
    containers = [container(f"c{i}", env=[{"name": c.ENV_VAULT_ADDR, "value": CANARY}]) for i in range(15)]
    outcome = run(pod(containers=containers))
    warnings = response(outcome)["warnings"]
    assert len(warnings) == 10 and "6 more warnings" in warnings[-1]
    assert len(outcome.audit["messages"]) == 15
