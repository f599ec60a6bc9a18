"""Offline review: AdmissionReview or bare manifest in, the response of both webhooks out."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
import yaml

from gtc_admission import constants as c
from gtc_admission.admission import handle_review
from gtc_admission.offline import OFFLINE_USER, ReviewInputError, _combine, parse_input, review_text
from tests.unit.conftest import (
    BADGE,
    BINDINGS,
    CANARY,
    CONFIG,
    DEV_SECRET,
    container,
    controller,
    pod,
    review,
)


def _patch(result_review: dict[str, Any]) -> list[dict[str, Any]]:
    encoded = result_review["response"].get("patch")
    return json.loads(base64.b64decode(encoded)) if encoded else []


def test_admission_review_json() -> None:
    """An AdmissionReview in JSON: patched and allowed, the uid echoed, validation passed on the patch."""
    body = review(pod(), uid="offline-uid-1")
    result = review_text(json.dumps(body), config=CONFIG, namespace=None)
    assert result.allowed is True
    answer = result.review["response"]
    assert answer["uid"] == "offline-uid-1"
    patched = jsonpatch.apply_patch(body["request"]["object"], _patch(result.review))
    assert patched["spec"]["serviceAccountName"] == BADGE
    assert answer["auditAnnotations"] == {"decision": "allowed", "rules": "none"}
    assert result.audit["endpoint"] == "offline"


def test_admission_review_yaml() -> None:
    """The same review written as YAML gives the same verdict."""
    body = review(pod(serviceAccountName="app-sa"))
    result = review_text(yaml.safe_dump(body), config=CONFIG, namespace=None)
    assert result.allowed is False
    assert c.RULE_WORKER_SERVICE_ACCOUNT in result.review["response"]["status"]["message"]


BARE_POD = f"""
apiVersion: v1
kind: Pod
metadata:
  name: worker-1
  labels:
    greentic.ai/component: worker
spec:
  containers:
    - name: app
      image: ghcr.io/greentic/worker:1
      env:
        - name: VAULT_ADDR
          value: {CANARY}
"""


def test_bare_pod_yaml_with_namespace() -> None:
    """A bare Pod plus --namespace is a CREATE by the offline user; warnings of /mutate are kept."""
    result = review_text(BARE_POD, config=CONFIG, namespace="acme-prod")
    assert result.allowed is True
    answer = result.review["response"]
    assert answer["uid"]  # generated
    assert answer["warnings"] == [
        "vault-settings-override: container app: VAULT_ADDR replaced with the configured value"
    ]
    assert answer["auditAnnotations"] == {"decision": "warned", "rules": c.RULE_VAULT_SETTINGS_OVERRIDE}
    assert result.audit["user"] == OFFLINE_USER and result.audit["operation"] == "CREATE"
    assert result.audit["name"] == "worker-1" and result.audit["namespace"] == "acme-prod"
    assert CANARY not in json.dumps(result.review) and CANARY not in json.dumps(result.audit)


def test_bare_pod_namespace_from_metadata() -> None:
    """Without --namespace, metadata.namespace binds the manifest; unbound means untouched."""
    manifest = pod()
    manifest["metadata"]["namespace"] = "acme-prod"
    assert _patch(review_text(json.dumps(manifest), config=CONFIG, namespace=None).review)
    manifest["metadata"]["namespace"] = "elsewhere"
    assert not _patch(review_text(json.dumps(manifest), config=CONFIG, namespace=None).review)


def test_deployment_is_judged_by_its_template() -> None:
    """A Deployment referencing the dev Secret is denied naming the template path; a clean one passes."""
    bad = controller("Deployment", pod(containers=[container(envFrom=[{"secretRef": {"name": DEV_SECRET}}])]))
    result = review_text(yaml.safe_dump(bad), config=CONFIG, namespace="acme-prod")
    assert result.allowed is False
    assert (
        "spec.template.spec.containers[0].envFrom[0].secretRef.name"
        in result.review["response"]["status"]["message"]
    )
    assert result.review["response"]["status"]["code"] == 403
    good = review_text(yaml.safe_dump(controller("Deployment", pod())), config=CONFIG, namespace="acme-prod")
    assert good.allowed is True and "patch" not in good.review["response"]


def test_validation_sees_a_setting_changed_after_mutation() -> None:
    """Both webhooks run: the result merges their rules (here only /mutate fires) and stays serialisable."""
    result = review_text(json.dumps(review(pod(), namespace="acme-stage")), config=CONFIG, namespace=None)
    assert result.allowed is True
    json.loads(json.dumps(result.review))


def test_warn_enforcement_offline() -> None:
    """warn: allowed with the denial as a warning, merged once even though both webhooks saw it."""
    manifest = pod(containers=[container(envFrom=[{"secretRef": {"name": DEV_SECRET}}])])
    result = review_text(json.dumps(manifest), config=CONFIG, namespace="acme-stage")
    assert result.allowed is True
    warnings = result.review["response"]["warnings"]
    assert len([w for w in warnings if w.startswith(c.RULE_DEV_SECRET_REFERENCE)]) == 1
    assert result.review["response"]["auditAnnotations"]["decision"] == "warned"


BAD_INPUTS = [
    pytest.param("", "INPUT is empty", None, id="empty"),
    pytest.param("   \n", "INPUT is empty", None, id="blank"),
    pytest.param("{not json", "neither JSON", None, id="broken-json"),
    pytest.param("a: [b\n", "neither JSON", None, id="broken-yaml"),
    pytest.param("just text", "must be an AdmissionReview or one Kubernetes object", None, id="scalar"),
    pytest.param("- a\n- b\n", "must be an AdmissionReview or one Kubernetes object", None, id="list"),
    pytest.param("kind: Pod\n---\nkind: Pod\n", "2 YAML documents", None, id="two-documents"),
    pytest.param("apiVersion: v1\nkind: PodList\nitems: []\n", "PodList", "acme-prod", id="list-kind"),
    pytest.param("metadata: {}\n", "no kind/apiVersion", "acme-prod", id="no-kind"),
    pytest.param(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "pass --namespace", None, id="no-namespace"
    ),
    pytest.param(
        "apiVersion: v1\nkind: Pod\nmetadata: {namespace: a}\n",
        "does not match metadata.namespace",
        "b",
        id="ns-conflict",
    ),
    pytest.param(
        "apiVersion: v1\nkind: Pod\nmetadata: [x]\n", "metadata must be a mapping", "a", id="bad-metadata"
    ),
    pytest.param(
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}),
        "not a valid AdmissionReview: request.uid",
        None,
        id="review-without-uid",
    ),
    pytest.param(
        json.dumps(review(pod(), namespace="acme-prod")),
        "does not match request.namespace",
        "other",
        id="review-ns-conflict",
    ),
    pytest.param("[" * 100 + "]" * 100, "deeper than 64", None, id="deep-json"),
    pytest.param("[" * 5000 + "]" * 5000, "deeper than 64", None, id="very-deep-json"),
    pytest.param("a: " + "[" * 100 + "]" * 100 + "\n", "deeper than 64", None, id="deep-yaml-flow"),
    pytest.param("- " * 2000 + "x\n", "deeper than 64", None, id="deep-yaml-block"),
    pytest.param("- " * 70 + "x\n", "deeper than 64", None, id="yaml-block-just-too-deep"),
    pytest.param("a: &a [*a]\n", "deeper than 64", None, id="recursive-alias"),
]


@pytest.mark.parametrize(("text", "expected", "namespace"), BAD_INPUTS)
def test_bad_input_is_a_review_input_error(text: str, expected: str, namespace: str | None) -> None:
    """Bad input raises ReviewInputError (CLI exit 2) saying what is wrong."""
    with pytest.raises(ReviewInputError) as caught:
        review_text(text, config=CONFIG, namespace=namespace)
    assert expected in str(caught.value)


def test_yaml_alias_bomb_is_refused() -> None:
    """A billion-laughs document is refused by size, not expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(ReviewInputError, match="more than"):
        parse_input("\n".join(lines) + "\n")


def test_review_with_namespace_fills_a_missing_request_namespace() -> None:
    """--namespace completes an AdmissionReview without request.namespace."""
    body = review(pod())
    del body["request"]["namespace"]
    result = review_text(json.dumps(body), config=CONFIG, namespace="acme-prod")
    assert _patch(result.review)


def test_a_refusal_by_validate_drops_the_patch() -> None:
    """When /validate refuses what /mutate patched, the result is the refusal alone, without a patch."""
    mutated = handle_review(review(pod()), endpoint="mutate", config=CONFIG, bindings=BINDINGS)
    refused = handle_review(review(pod()), endpoint="validate", config=CONFIG, bindings=BINDINGS)
    assert "patch" in mutated.review["response"] and refused.decision == "denied"
    result = _combine(mutated, refused)
    assert result.allowed is False
    assert "patch" not in result.review["response"] and "patchType" not in result.review["response"]
    assert result.review["response"]["status"] == refused.review["response"]["status"]
    assert result.audit["patched"] == [] and result.audit["decision"] == "denied"
    assert result.review["response"]["auditAnnotations"]["rules"] == c.RULE_WORKER_SERVICE_ACCOUNT


def test_yaml_errors_never_quote_the_input() -> None:
    """What the YAML parser would quote (a tag, an escape) is cut from the message; syntax characters stay."""
    for text in (f"stringData: {{token: !{CANARY} x}}\n", f'data: "{CANARY}\\q"\n'):
        with pytest.raises(ReviewInputError) as caught:
            review_text(text, config=CONFIG, namespace="acme-prod")
        assert CANARY not in str(caught.value) and "line 1" in str(caught.value)
    with pytest.raises(ReviewInputError, match=r"expected ',' or '\]'"):
        review_text("kind: [Pod\n", config=CONFIG, namespace="acme-prod")
