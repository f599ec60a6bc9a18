"""Issue 10, part 2: the Kubernetes API token the ServiceAccount plugin mounts before webhooks run.

The pods here are built as the API server hands them to a webhook on CREATE (``as_admitted``: the plugin's
``kube-api-access-*`` volume and its read-only mounts in every container and init container). The worker
mutation removes exactly that volume and its mounts; /validate reports a worker that still carries it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from gtc_admission import constants as c
from gtc_admission.admission import Endpoint, Outcome, handle_review
from gtc_admission.api_token import is_api_access_volume
from tests.unit.conftest import (
    API_ACCESS_VOLUME,
    BADGE,
    BINDINGS,
    CANARY,
    CONFIG,
    api_access_volume,
    as_admitted,
    container,
    controller,
    pod,
    review,
)
from tests.unit.test_policy import patch_of, patched


def run(obj: dict[str, Any], endpoint: Endpoint = "mutate", namespace: str = "acme-prod") -> Outcome:
    return handle_review(
        review(obj, namespace=namespace), endpoint=endpoint, config=CONFIG, bindings=BINDINGS
    )


def _worker() -> dict[str, Any]:
    """A worker with an init container and two containers, one with a data mount of its own."""
    return as_admitted(
        pod(
            containers=[
                container("app", volumeMounts=[{"name": "data", "mountPath": "/data"}]),
                container("sidecar"),
            ],
            initContainers=[container("init")],
            volumes=[{"name": "data", "emptyDir": {}}],
        )
    )


def _volume_names(obj: dict[str, Any]) -> list[str]:
    return [volume["name"] for volume in obj["spec"].get("volumes") or []]


def _mount_names(obj: dict[str, Any]) -> list[str]:
    return [
        mount["name"]
        for list_name in ("initContainers", "containers")
        for item in obj["spec"].get(list_name) or []
        for mount in item.get("volumeMounts") or []
    ]


# --- Recognition: the exact shape, nothing else. ---------------------------------------------------------


def _without_default_mode() -> dict[str, Any]:
    volume = api_access_volume()
    del volume["projected"]["defaultMode"]
    return volume


def _without_field_ref_version() -> dict[str, Any]:
    volume = api_access_volume()
    del volume["projected"]["sources"][2]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"]
    return volume


@pytest.mark.parametrize(
    "volume",
    [
        api_access_volume(),
        api_access_volume("kube-api-access-9bzqv"),
        _without_default_mode(),
        _without_field_ref_version(),
    ],
)
def test_the_plugins_volume_is_recognised(volume: dict[str, Any]) -> None:
    """The plugin's volume, also without the fields the API server would only default."""
    assert is_api_access_volume(volume)


def _changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """The plugin's volume with one field set (or removed, for ``...``)."""
    volume = api_access_volume()
    node: Any = volume
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return volume


SOURCES = ("projected", "sources")
TOKEN = (*SOURCES, 0, "serviceAccountToken")
CA = (*SOURCES, 1, "configMap")
NAMESPACE_ITEM = (*SOURCES, 2, "downwardAPI", "items", 0)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "api-access-x7k2d"),  # another name prefix
        (("name",), "my-kube-api-access-x7k2d"),
        (("secret",), {"secretName": "x"}),  # a second volume source next to it
        ((*TOKEN, "audience"), "vault"),  # a token for another audience
        ((*TOKEN, "path"), "api-token"),
        ((*TOKEN, "expirationSeconds"), "3607"),
        ((*CA, "name"), "my-ca"),
        ((*CA, "items"), [{"key": "ca.crt", "path": "ca.crt", "mode": 256}]),
        ((*CA, "optional"), True),
        ((*NAMESPACE_ITEM, "path"), "ns"),
        ((*NAMESPACE_ITEM, "fieldRef", "fieldPath"), "metadata.name"),
        ((*NAMESPACE_ITEM, "fieldRef", "apiVersion"), "v2"),
        ((*NAMESPACE_ITEM, "mode"), 256),
        (("projected", "defaultMode"), 256),
        (SOURCES, [{"serviceAccountToken": {"path": "token"}}]),
        (("projected", "sources", 2), {"secret": {"name": "gtc-dev-secrets"}}),
        (("projected",), "not a mapping"),
    ],
)
def test_any_other_shape_is_not_recognised(path: tuple[Any, ...], value: Any) -> None:
    """A volume the deployer wrote (same prefix, other content) is never taken for the plugin's."""
    assert not is_api_access_volume(_changed(path, value))


def test_sources_in_another_order_are_not_recognised() -> None:
    volume = api_access_volume()
    volume["projected"]["sources"].reverse()
    assert not is_api_access_volume(volume)


# --- /mutate: removed with its mounts, idempotent. --------------------------------------------------------


def test_mutation_removes_the_api_token_volume_and_every_mount_of_it() -> None:
    """The worker keeps its own volumes and mounts; the plugin's volume and its three mounts go."""
    obj = _worker()
    assert API_ACCESS_VOLUME in _volume_names(obj)
    assert _mount_names(obj).count(API_ACCESS_VOLUME) == 3
    outcome = run(obj)
    assert outcome.review["response"]["allowed"] is True
    assert outcome.review["response"].get("warnings") is None  # the usual case: nothing to warn about
    after = patched(obj, outcome)
    assert _volume_names(after) == ["data", c.VAULT_TOKEN_VOLUME]
    assert API_ACCESS_VOLUME not in _mount_names(after)
    assert _mount_names(after) == [c.VAULT_TOKEN_VOLUME, "data", c.VAULT_TOKEN_VOLUME, c.VAULT_TOKEN_VOLUME]
    assert after["spec"]["serviceAccountName"] == BADGE
    # Every remaining mount names a volume the pod has: the API server would refuse the pod otherwise.
    assert set(_mount_names(after)) <= set(_volume_names(after))
    removals = [op["path"] for op in patch_of(outcome) if op["op"] == "remove"]
    assert "/spec/volumes/1" in removals
    assert "/spec/containers/0/volumeMounts/1" in removals


def test_re_admission_of_the_patched_worker_gives_an_empty_patch() -> None:
    obj = _worker()
    after = patched(obj, run(obj))
    again = run(after)
    assert patch_of(again) == []
    assert again.rules == ()


def test_patched_worker_passes_validate() -> None:
    obj = _worker()
    validated = run(patched(obj, run(obj)), "validate")
    assert validated.review["response"]["allowed"] is True
    assert c.RULE_WORKER_API_TOKEN not in validated.rules


def test_a_pod_that_asks_for_the_api_token_keeps_it() -> None:
    """automountServiceAccountToken: true on the pod is its explicit choice: kept, and not reported."""
    obj = as_admitted(pod(automountServiceAccountToken=True))
    outcome = run(obj)
    after = patched(obj, outcome)
    assert API_ACCESS_VOLUME in _volume_names(after)
    assert API_ACCESS_VOLUME in _mount_names(after)
    assert run(after, "validate").review["response"]["allowed"] is True


def test_a_pod_that_opted_out_has_nothing_to_remove() -> None:
    obj = as_admitted(pod(automountServiceAccountToken=False))
    assert API_ACCESS_VOLUME not in _volume_names(obj)
    assert not [op for op in patch_of(run(obj)) if op["op"] == "remove"]


def test_a_volume_of_another_shape_is_never_touched() -> None:
    """Same name prefix, a token for another audience: the deployer's own volume, kept with its mount."""
    own = _changed((*TOKEN, "audience"), "sts.example.com")
    obj = pod(
        containers=[container(volumeMounts=[{"name": own["name"], "mountPath": "/var/run/sts"}])],
        volumes=[own],
    )
    outcome = run(obj)
    after = patched(obj, outcome)
    assert own in after["spec"]["volumes"]
    assert {"name": own["name"], "mountPath": "/var/run/sts"} in after["spec"]["containers"][0][
        "volumeMounts"
    ]
    assert run(after, "validate").review["response"]["allowed"] is True


def test_the_api_token_mount_on_a_worker_already_on_its_badge_is_removed_too() -> None:
    """A badge without automountServiceAccountToken: false (a cluster set up by hand): same removal."""
    obj = as_admitted(pod(serviceAccountName=BADGE))
    after = patched(obj, run(obj))
    assert API_ACCESS_VOLUME not in _volume_names(after) + _mount_names(after)


@pytest.mark.parametrize("namespace", ["acme-dev", "unbound"])
def test_outside_vault_namespaces_the_api_token_stays(namespace: str) -> None:
    obj = as_admitted(pod())
    assert patch_of(run(obj, namespace=namespace)) == []


def test_routers_and_other_pods_keep_their_api_token() -> None:
    for component in ("router", None):
        obj = as_admitted(pod(component))
        assert patch_of(run(obj)) == []


# --- /validate and templates: reported where the patch did not remove it. ----------------------------------


def test_validate_denies_a_worker_that_still_carries_the_api_token() -> None:
    """E.g. another webhook gave it back after ours: the rule names the volume and the way out."""
    obj = as_admitted(pod(serviceAccountName=BADGE))
    outcome = run(obj, "validate")
    assert outcome.review["response"]["allowed"] is False
    assert outcome.rules == (c.RULE_WORKER_API_TOKEN,)
    message = outcome.review["response"]["status"]["message"]
    assert API_ACCESS_VOLUME in message
    assert "spec.volumes[0]" in message
    assert "automountServiceAccountToken: true" in message
    assert outcome.audit["rules"] == [c.RULE_WORKER_API_TOKEN]


@pytest.mark.parametrize(
    ("namespace", "allowed", "warned"), [("acme-stage", True, True), ("acme-canary", True, False)]
)
def test_validate_follows_the_environments_enforcement(namespace: str, allowed: bool, warned: bool) -> None:
    outcome = run(as_admitted(pod(serviceAccountName=BADGE)), "validate", namespace)
    assert outcome.review["response"]["allowed"] is allowed
    warnings = outcome.review["response"].get("warnings") or []
    assert any(c.RULE_WORKER_API_TOKEN in w for w in warnings) is warned
    assert c.RULE_WORKER_API_TOKEN in outcome.audit["rules"]


def test_a_template_carrying_the_volume_is_judged_as_it_will_be() -> None:
    """A Deployment whose template copies the plugin's volume: its pods will lose it, so no denial."""
    template = pod(volumes=[api_access_volume()])
    outcome = run(controller("Deployment", template), "validate")
    assert outcome.review["response"]["allowed"] is True


def test_no_value_of_the_pod_reaches_the_answer() -> None:
    obj = _worker()
    obj["spec"]["containers"][0]["env"] = [{"name": "TOKEN", "value": CANARY}]
    for endpoint in ("mutate", "validate"):
        outcome = run(copy.deepcopy(obj), endpoint)
        assert CANARY not in json.dumps(outcome.review) + json.dumps(outcome.audit)


def test_the_wire_patch_applies_with_jsonpatch_in_order() -> None:
    """Mount removals in several containers and a volume removal, next to appends, in one valid patch."""
    obj = _worker()
    outcome = run(obj)
    assert jsonpatch.apply_patch(copy.deepcopy(obj), patch_of(outcome)) == patched(obj, outcome)
