"""The entry point: body decoding, request errors, the AdmissionReview response and the audit record."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from gtc_admission import constants as c
from gtc_admission.admission import (
    MAX_JSON_DEPTH,
    BadRequest,
    Outcome,
    TooDeep,
    decode_body,
    handle_review,
    internal_error_outcome,
)
from tests.unit.conftest import BINDINGS, CANARY, CONFIG, container, pod, review

AUDIT_FIELDS = {
    "uid",
    "endpoint",
    "kind",
    "namespace",
    "name",
    "operation",
    "subResource",
    "user",
    "dryRun",
    "component",
    "env",
    "tenant",
    "team",
    "decision",
    "rules",
    "messages",
    "patched",
    "enforcement",
}


def nested(depth: int) -> bytes:
    """A JSON text nesting exactly `depth` containers, mixing arrays and objects."""
    text = "1"
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k":{text}}}'
    return text.encode()


# --- decode_body -----------------------------------------------------------------------------------------


def test_decode_body_returns_the_object() -> None:
    """A valid review decodes to the same object json.loads gives."""
    body = review(pod())
    assert decode_body(json.dumps(body).encode()) == body


def test_depth_limit_is_exact() -> None:
    """MAX_JSON_DEPTH levels pass, one more is a BadRequest."""
    assert decode_body(nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(TooDeep, match="nested deeper than 64") as caught:
        decode_body(nested(MAX_JSON_DEPTH + 1))
    assert isinstance(caught.value, BadRequest) and caught.value.status == 400


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"not json", "not valid JSON", id="text"),
        pytest.param(b'{"a": 1', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b'{"a": NaN}', "not valid JSON", id="nan"),
        pytest.param(b'{"a": -Infinity}', "not valid JSON", id="infinity"),
        pytest.param(b'{"a": 1e999}', "not valid JSON", id="overflowing-number"),
        pytest.param(b'{"a": "\\ud800"}', "not valid JSON", id="lone-surrogate"),
        pytest.param(b'{"a": 1} {}', "not valid JSON", id="two-documents"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested deeper", id="deep-arrays"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper", id="deep-objects"),
        pytest.param(b"[" * 1_000_000, "nested deeper", id="deep-unclosed"),
        pytest.param(b"[[]" * 70_000, "nested deeper", id="unbalanced-many-levels"),
        pytest.param(b"[[]" * 100, "not valid JSON", id="unbalanced-short"),
        pytest.param(b"]]]", "not valid JSON", id="closers"),
    ],
)
def test_decode_body_errors(raw: bytes, expected: str) -> None:
    """Non-JSON and absurd nesting are BadRequest 400, never a RecursionError."""
    with pytest.raises(BadRequest) as caught:
        decode_body(raw)
    assert caught.value.status == 400
    assert expected in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"token": "' + CANARY.encode() + b'", oops}',
        b'{"token": "' + CANARY.encode() + b'\\x"}',
        b'{"token": "' + CANARY.encode(),
        b'{"token": "' + CANARY.encode() + b'\xff"}',
    ],
)
def test_decode_errors_do_not_echo_the_body(raw: bytes) -> None:
    """A decoding error names the problem and the position, never the text around it."""
    with pytest.raises(BadRequest) as caught:
        decode_body(raw)
    assert CANARY not in caught.value.message
    assert "CANARY" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"k": "' + "[" * 200 + '"}', id="brackets-in-string"),
        pytest.param('{"k": "\\"' + "{" * 200 + '"}', id="escaped-quote-then-brackets"),
        pytest.param('{"k\\\\": [' + "1," * 10 + "1]}", id="escaped-backslash-before-quote"),
        pytest.param('{"f:k:{\\"name\\":\\"app\\"}": {}}', id="managed-fields-key"),
        pytest.param(json.dumps({"a": ["]]]]" * 50, {"b": "{{{{" * 50}]}), id="mixed"),
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    """Strings (with escapes) are skipped by the depth scan, so they neither hide nor fake depth."""
    assert decode_body(text.encode()) == json.loads(text)


def test_depth_hidden_behind_closing_brackets_in_strings_is_found() -> None:
    """'"]]]"' inside strings cannot hide real nesting from the scan."""
    text = ('{"k": ["]]]]]]]]",' * (MAX_JSON_DEPTH + 1)) + "1" + "]}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(BadRequest, match="nested deeper"):
        decode_body(text.encode())


def test_decode_body_is_linear_on_hostile_bodies() -> None:
    """3 MB of bracket soup is refused in well under a second (the scan is linear, json.loads never runs)."""
    block = b"[" * 63 + b"]" * 63 + b","
    spike = b"[[]," * (MAX_JSON_DEPTH + 1) + b"1" + b"]" * (MAX_JSON_DEPTH + 1)
    costly = b"[" + block * (3_000_000 // len(block)) + spike + b"]"
    for raw in (costly, b"[[]," * 750_000 + b"1"):
        started = time.perf_counter()
        with pytest.raises(BadRequest, match="nested deeper"):
            decode_body(raw)
        assert time.perf_counter() - started < 1.5


# --- handle_review: request errors -------------------------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    body = review(pod())
    node: Any = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return body


def _with(path: str, value: Any) -> dict[str, Any]:
    body = review(pod())
    node: Any = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return body


BAD_REQUESTS = [
    pytest.param([], "body: must be a JSON object", id="not-an-object"),
    pytest.param("AdmissionReview", "body: must be a JSON object", id="string"),
    pytest.param(None, "body: must be a JSON object", id="null"),
    pytest.param(_without("request"), "request: missing", id="missing-request"),
    pytest.param(_with("request", "x"), "request: must be an object", id="request-not-object"),
    pytest.param(_without("request.uid"), "request.uid", id="missing-uid"),
    pytest.param(_with("request.uid", ""), "request.uid", id="empty-uid"),
    pytest.param(_with("request.uid", 7), "request.uid", id="uid-number"),
    pytest.param(_with("kind", "Pod"), "kind: must be AdmissionReview", id="wrong-kind"),
    pytest.param(_without("kind"), "kind: must be AdmissionReview", id="missing-kind"),
    pytest.param(_with("apiVersion", "admission.k8s.io/v1beta1"), "apiVersion", id="wrong-apiVersion"),
    pytest.param(_without("apiVersion"), "apiVersion", id="missing-apiVersion"),
    pytest.param(_with("request.object", "pod"), "request.object: must be an object", id="object-string"),
    pytest.param(_with("request.object", [1]), "request.object: must be an object", id="object-list"),
    pytest.param(
        _with("request.object", None), "request.object: must be an object for CREATE", id="object-null"
    ),
    pytest.param(_with("request.oldObject", 3), "request.oldObject", id="oldObject-number"),
    pytest.param(_with("request.operation", "PATCH"), "request.operation", id="operation"),
    pytest.param(_without("request.kind"), "request.kind", id="missing-request-kind"),
    pytest.param(
        _with("request.kind", {"group": "", "version": "v1"}), "request.kind.kind", id="request-kind-empty"
    ),
    pytest.param(_with("request.kind", {"kind": 5}), "request.kind.kind", id="request-kind-number"),
    pytest.param(_with("request.namespace", ["a"]), "request.namespace", id="namespace-list"),
    pytest.param(_with("request.userInfo", "me"), "request.userInfo", id="userInfo-string"),
    pytest.param(
        _with("request.userInfo", {"username": 1}), "request.userInfo.username", id="username-number"
    ),
    pytest.param(_with("request.dryRun", "yes"), "request.dryRun", id="dryRun-string"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_REQUESTS)
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_request_errors_are_bad_requests(body: Any, expected: str, endpoint: Any) -> None:
    """Errors about the request raise BadRequest(400) naming the field, never echoing a value."""
    with pytest.raises(BadRequest) as caught:
        handle_review(body, endpoint=endpoint, config=CONFIG, bindings=BINDINGS)
    assert caught.value.status == 400
    assert expected in caught.value.message
    assert CANARY not in caught.value.message


def test_too_deep_body_is_a_bad_request_through_decode() -> None:
    """The server path: a too-deep body never reaches handle_review."""
    body = json.dumps(review(pod())).encode()
    deep = body[:-1] + b',"x":' + nested(MAX_JSON_DEPTH) + b"}"
    with pytest.raises(BadRequest, match="nested deeper"):
        handle_review(decode_body(deep), endpoint="mutate", config=CONFIG, bindings=BINDINGS)


def test_bad_request_values_are_not_echoed() -> None:
    """A wrong apiVersion carrying a canary is refused without repeating it."""
    with pytest.raises(BadRequest) as caught:
        handle_review(_with("apiVersion", CANARY), endpoint="mutate", config=CONFIG, bindings=BINDINGS)
    assert CANARY not in caught.value.message


# --- handle_review: the response and the audit record ------------------------------------------------------


def _run(body: dict[str, Any], endpoint: Any = "mutate") -> Outcome:
    return handle_review(body, endpoint=endpoint, config=CONFIG, bindings=BINDINGS)


def test_allowed_response_shape() -> None:
    """apiVersion/kind, echoed uid, JSONPatch base64 patch, auditAnnotations; no status when allowed."""
    body = review(pod(), uid="uid-123")
    outcome = _run(body)
    assert outcome.review["apiVersion"] == "admission.k8s.io/v1"
    assert outcome.review["kind"] == "AdmissionReview"
    answer = outcome.review["response"]
    assert answer["uid"] == "uid-123" and answer["allowed"] is True
    assert answer["patchType"] == "JSONPatch"
    assert isinstance(json.loads(base64.b64decode(answer["patch"])), list)
    assert answer["auditAnnotations"] == {"decision": "allowed", "rules": "none"}
    assert "status" not in answer and "warnings" not in answer
    json.dumps(outcome.review)  # serialisable as is


def test_denied_response_shape() -> None:
    """Denied: status code/reason/message with [rule] prefixes, no patch, audit annotations name the rule."""
    obj = pod(serviceAccountName="app-sa")
    outcome = _run(review(obj, uid="uid-9"), "validate")
    answer = outcome.review["response"]
    assert answer["uid"] == "uid-9" and answer["allowed"] is False
    assert answer["status"]["code"] == 403 and answer["status"]["reason"] == "Forbidden"
    assert answer["status"]["message"].startswith(f"[{c.RULE_WORKER_SERVICE_ACCOUNT}] ")
    assert "patch" not in answer and "patchType" not in answer
    assert answer["auditAnnotations"] == {"decision": "denied", "rules": c.RULE_WORKER_SERVICE_ACCOUNT}
    assert outcome.decision == "denied" and outcome.rules == (c.RULE_WORKER_SERVICE_ACCOUNT,)


def test_audit_record_fields() -> None:
    """Every documented field is present, without time; values come from the request and the binding."""
    body = review(
        pod(containers=[container(env=[{"name": c.ENV_VAULT_ADDR, "value": CANARY}])]), dry_run=True
    )
    outcome = _run(body)
    audit = outcome.audit
    assert set(audit) == AUDIT_FIELDS
    assert audit["uid"] == body["request"]["uid"]
    assert (audit["kind"], audit["namespace"], audit["name"], audit["operation"]) == (
        "Pod",
        "acme-prod",
        "worker-",
        "CREATE",
    )
    assert audit["user"] == "system:serviceaccount:ci:deployer"
    assert audit["dryRun"] is True
    assert (audit["component"], audit["env"], audit["tenant"], audit["team"]) == (
        "worker",
        "prod",
        "acme",
        "core",
    )
    assert audit["decision"] == "warned" and audit["rules"] == [c.RULE_VAULT_SETTINGS_OVERRIDE]
    assert audit["enforcement"] == "deny" and audit["endpoint"] == "mutate"
    assert "/spec/serviceAccountName" in audit["patched"]
    assert "/spec/containers/0/env/0" in audit["patched"]
    assert CANARY not in json.dumps(audit)


def test_audit_name_prefers_the_request_name() -> None:
    """request.name wins over metadata.generateName."""
    body = review(pod())
    body["request"]["name"] = "worker-abc"
    assert _run(body).audit["name"] == "worker-abc"


def test_audit_for_an_unbound_namespace() -> None:
    """No binding: env/tenant/team/enforcement are null, nothing patched."""
    audit = _run(review(pod(), namespace="nobody")).audit
    assert (audit["env"], audit["tenant"], audit["team"], audit["enforcement"]) == (None, None, None, None)
    assert audit["patched"] == [] and audit["decision"] == "allowed"


def test_namespace_falls_back_to_the_object() -> None:
    """Without request.namespace the object's metadata.namespace binds it."""
    obj = pod()
    obj["metadata"]["namespace"] = "acme-prod"
    body = review(obj)
    del body["request"]["namespace"]
    assert "patch" in _run(body).review["response"]


# --- internal_error_outcome -------------------------------------------------------------------------------


def test_internal_error_outcome_fails_closed() -> None:
    """A well-formed denial with the error id, the uid echoed, rule internal-error, status 500."""
    body = review(pod(), uid="uid-x", dry_run=True)
    outcome = internal_error_outcome(body, endpoint="validate", error_id="e-42")
    answer = outcome.review["response"]
    assert answer["uid"] == "uid-x" and answer["allowed"] is False
    assert answer["status"]["code"] == 500 and "e-42" in answer["status"]["message"]
    assert outcome.rules == (c.RULE_INTERNAL_ERROR,) and outcome.decision == "denied"
    assert outcome.dry_run is True
    assert outcome.audit["errorId"] == "e-42" and outcome.audit["kind"] == "Pod"
    assert set(outcome.audit) == AUDIT_FIELDS | {"errorId"}


@pytest.mark.parametrize("body", [None, [], "x", {"request": "x"}, {"request": {"uid": 5}}], ids=str)
def test_internal_error_outcome_on_any_body(body: Any) -> None:
    """Whatever the body, the answer is a denial (empty uid when none can be found)."""
    outcome = internal_error_outcome(body, endpoint="mutate", error_id="id\nwith junk")
    assert outcome.review["response"]["uid"] == ""
    assert outcome.review["response"]["allowed"] is False
    assert "\n" not in outcome.review["response"]["status"]["message"]
