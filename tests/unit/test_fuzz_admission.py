"""Fuzzing the admission handler through the aiohttp edge (hypothesis, in-process with aiohttp_client).

Thousands of AdmissionReviews, generated from scratch and mutated from valid ones (wrong types at every
level, missing keys, deep nesting, huge strings, unicode, lone surrogates, broken bytes), are POSTed to
``/mutate`` and ``/validate`` of the real app. Whatever the body, the answer is one of two things:

- HTTP 200 with a well-formed AdmissionReview response: apiVersion and kind, ``response.uid`` equal to
  the request's uid, ``allowed`` a boolean, a patch (only on ``/mutate``) that decodes to a JSON Patch
  list and applies to the object sent, and exactly one audit line for it; or
- HTTP 4xx with a JSON body ``{"error": "..."}`` and no audit line.

Never a 5xx, never an error logged, never the fail-closed ``internal-error`` answer: that answer is the
server's safety net for an exception escaping the decision core, so seeing it means the core crashed.
(This fuzzing found one such crash, an unhashable ``request.operation``; it is fixed and has a regression
test at the end.)
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import jsonpatch
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gtc_admission import constants as c
from gtc_admission.admission import MAX_JSON_DEPTH
from gtc_admission.review import API_VERSION, PATCH_TYPE_JSON, REVIEW_KIND
from gtc_admission.server import MAX_BODY_BYTES, ServerSettings, make_app
from tests.unit.conftest import BADGE, BINDINGS, CONFIG, DEV_SECRET, container, controller, pod, review
from tests.unit.test_properties import pods

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


# About 2,800 reviews in all, in about half a minute here. The deadline is per example and generous (a
# loaded CI machine): it is there to catch a pathological (super-linear) input, not to time the handler.
def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=dt.timedelta(seconds=3),
        # The explain phase re-runs a failing example hundreds of times to comment on it: slow, unneeded.
        phases=tuple(phase for phase in Phase if phase is not Phase.explain),
        suppress_health_check=[
            # One app and client for all examples of a test: the handler keeps no per-request state, and
            # the audit lines and error records are checked per example (what was added since the last).
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


ENDPOINTS: Final = ("/mutate", "/validate")
JSON_PATCH_OPS: Final = frozenset({"add", "remove", "replace", "move", "copy", "test"})
CONTENT_TYPES: Final = ("application/json", "application/json; charset=utf-8")


# ---------------------------------------------------------------------------------------------------
# The app under test, its audit stream and the error records it logs.
# ---------------------------------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger (ours, aiohttp's "Error handling request")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """The real app (make_app) behind aiohttp's test client; audit lines go to a strict UTF-8 stream like
    a real stdout, so that a record that cannot be encoded would show as a failed audit write."""

    def __init__(self, client: TestClient[web.Request, web.Application], audit: io.BytesIO) -> None:
        self.client = client
        self._audit = audit
        self._audit_seen = 0
        self.errors = ErrorRecords()

    def take_errors(self) -> list[str]:
        """The error records logged since the last call (messages only)."""
        messages = [record.getMessage() for record in self.errors.records]
        self.errors.records.clear()
        return messages

    def new_audit_lines(self) -> list[dict[str, Any]]:
        data = self._audit.getvalue()
        fresh, self._audit_seen = data[self._audit_seen :], len(data)
        return [json.loads(line) for line in fresh.decode("utf-8").splitlines()]

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> Answer:
        # A file-like body: aiohttp warns (an error here) about large raw bytes bodies.
        data = io.BytesIO(body)
        async with self.client.post(path, data=data, headers={"Content-Type": content_type}) as resp:
            return Answer(resp.status, resp.content_type, await resp.read())


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@pytest.fixture
async def harness(aiohttp_client: ClientFactory) -> AsyncIterator[Harness]:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    app = make_app(ServerSettings(), CONFIG, BINDINGS, audit_stream=stream, registry=CollectorRegistry())
    h = Harness(await aiohttp_client(app), raw)
    root = logging.getLogger()
    root.addHandler(h.errors)
    try:
        yield h
    finally:
        root.removeHandler(h.errors)


# ---------------------------------------------------------------------------------------------------
# What every answer must be.
# ---------------------------------------------------------------------------------------------------


def _sent_uid(document: object) -> str | None:
    request = document.get("request") if isinstance(document, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) and uid else None


def _check_patch(response: dict[str, Any], document: Any) -> None:
    assert response["patchType"] == PATCH_TYPE_JSON
    try:
        decoded = base64.b64decode(response["patch"], validate=True)
    except binascii.Error as exc:  # pragma: no cover - a failure message, not a path
        raise AssertionError(f"patch is not base64: {exc}") from None
    operations = json.loads(decoded)
    assert isinstance(operations, list) and operations, "a patch is a non-empty JSON Patch list"
    for operation in operations:
        assert isinstance(operation, dict)
        assert operation.get("op") in JSON_PATCH_OPS
        assert isinstance(operation.get("path"), str) and operation["path"].startswith("/")
    # The API server applies it to the object it sent: it must apply cleanly.
    jsonpatch.JsonPatch(operations).apply(copy.deepcopy(document["request"]["object"]))


async def check_answer(h: Harness, path: str, body: bytes, document: object = None) -> Answer:
    """POST ``body`` and assert the contract of the module docstring; ``document`` is what it encodes
    (None when the body is not JSON)."""
    answer = await h.post(path, body)
    assert answer.status < 500, f"HTTP {answer.status}: {answer.body[:300]!r}"
    assert answer.content_type == "application/json"
    payload = json.loads(answer.body)
    audit = h.new_audit_lines()
    errors = h.take_errors()
    assert not errors, errors
    if answer.status != 200:
        assert 400 <= answer.status < 500
        assert isinstance(payload, dict) and set(payload) == {"error"}
        assert isinstance(payload["error"], str) and payload["error"]
        event(f"HTTP {answer.status} {payload['error'][:40]}")
        assert audit == [], "a refused request is not a decision and has no audit line"
        return answer

    # The uid as any JSON decoder reads the body: an escaped surrogate pair ("\\ud800\\udc00", which
    # json.dumps writes for two generated lone surrogates) is one character, U+10000.
    uid = _sent_uid(json.loads(body))
    assert uid is not None, "HTTP 200 for a body that is not an AdmissionReview with a uid"
    assert isinstance(payload, dict)
    assert payload["apiVersion"] == API_VERSION
    assert payload["kind"] == REVIEW_KIND
    response = payload["response"]
    assert response["uid"] == uid
    assert isinstance(response["allowed"], bool)
    rules = response["auditAnnotations"][c.AUDIT_ANNOTATION_RULES].split(",")
    assert c.RULE_INTERNAL_ERROR not in rules, "the decision core raised (fail-closed safety net used)"
    event("allowed" if response["allowed"] else "denied")
    if not response["allowed"]:
        assert isinstance(response["status"]["code"], int)
        assert isinstance(response["status"]["message"], str)
        assert "patch" not in response
    for warning in response.get("warnings", []):
        assert isinstance(warning, str)
    if "patch" in response:
        assert path == "/mutate", "only /mutate patches"
        event("patched")
        _check_patch(response, document)
    else:
        assert "patchType" not in response
    assert len(audit) == 1 and audit[0]["uid"] == uid
    return answer


def encode(document: object, *, ascii_only: bool) -> bytes:
    """JSON as a client would send it. Without ensure_ascii a lone surrogate has no UTF-8 form: it is
    sent as its surrogatepass bytes (invalid UTF-8), which the server must refuse with a 400."""
    text = json.dumps(document, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------------
# Strategies.
# ---------------------------------------------------------------------------------------------------

# Keys the decision core looks at, so that generated junk lands where it matters.
K8S_KEYS: Final = (
    "apiVersion", "kind", "request", "uid", "operation", "object", "oldObject", "namespace", "name",
    "subResource", "userInfo", "username", "dryRun", "group", "version", "metadata", "labels",
    "annotations", "generateName", "deletionTimestamp", "spec", "template", "jobTemplate", "containers",
    "initContainers", "ephemeralContainers", "env", "envFrom", "valueFrom", "secretKeyRef", "secretRef",
    "value", "volumes", "volumeMounts", "mountPath", "secret", "secretName", "projected", "sources",
    "serviceAccountToken", "serviceAccountName", "serviceAccount", "image",
    "greentic.ai/component", c.ANNOTATION_SECRETS_BACKEND,
)  # fmt: skip

lone_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
odd_text = st.one_of(
    st.text(max_size=40),  # any unicode, including look-alikes, RTL marks and zero-width characters
    st.sampled_from(["", "default", BADGE, DEV_SECRET, "worker", "router", "vault", "acme-prod"]),
    st.builds(lambda s, t: s + t, st.text(max_size=5), lone_surrogates),
    st.sampled_from(["\u0000", "\ufeff", "\u202e", "\u200b", "w\u043erker", "\U0001f600" * 3]),
)


class Huge(str):
    """A long string with a short repr, so that a failing example stays readable."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} x {self[:1]!r}>"


huge_text = st.builds(
    lambda char, size: Huge(char * size), st.characters(), st.integers(min_value=1_000, max_value=100_000)
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, odd_text)
keys = st.one_of(st.sampled_from(K8S_KEYS), st.text(max_size=12))
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)


def nest(depth: int, shape: str, leaf: object) -> object:
    """``leaf`` inside ``depth`` levels of lists, objects, or both alternating."""
    value = leaf
    for level in range(depth):
        as_list = shape == "list" or (shape == "mixed" and level % 2 == 0)
        value = [value] if as_list else {"k": value}
    return value


# Around the limit on purpose: just inside (answered), just outside and far beyond (400).
deep_values = st.builds(
    nest,
    st.one_of(st.integers(1, 200), st.sampled_from([MAX_JSON_DEPTH - 8, MAX_JSON_DEPTH - 4, MAX_JSON_DEPTH])),
    st.sampled_from(["list", "dict", "mixed"]),
    leaves,
)
junk = st.one_of(json_values, deep_values, huge_text, leaves)


def deployment_of(obj: dict[str, Any]) -> dict[str, Any]:
    template = {key: obj[key] for key in ("metadata", "spec") if key in obj}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {"template": template},
    }


def _fixed_reviews() -> list[dict[str, Any]]:
    """Valid AdmissionReviews that reach every rule: workers in every kind of namespace, overrides, the
    dev secret in every place, routers, controllers, ephemeral containers, UPDATE/DELETE, dry runs."""
    dev_secret_pod = pod(
        containers=[
            container(
                env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": DEV_SECRET, "key": "k"}}}],
                envFrom=[{"secretRef": {"name": DEV_SECRET}}],
            )
        ],
        volumes=[{"name": "s", "secret": {"secretName": DEV_SECRET}}],
    )
    overriding = pod(
        containers=[
            container(env=[{"name": c.ENV_VAULT_ADDR, "value": "https://elsewhere:8200"}]),
            container("side", env=[{"name": c.ENV_GREENTIC_TENANT, "value": "globex"}]),
        ],
        initContainers=[container("init")],
    )
    being_deleted = pod()
    being_deleted["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return [
        review(pod()),
        review(pod(), namespace="acme-stage"),
        review(pod(), namespace="acme-canary"),
        review(pod(), namespace="acme-dev"),
        review(pod(), namespace="unbound"),
        review(overriding),
        review(overriding, namespace="acme-stage"),
        review(dev_secret_pod),
        review(pod("router"), namespace="acme-prod"),
        review(pod("router", serviceAccountName=BADGE), namespace="acme-prod"),
        review(pod(serviceAccountName="app-sa"), namespace="acme-stage"),
        review(controller("Deployment", pod()), namespace="acme-prod"),
        review(controller("Job", overriding), namespace="acme-prod"),
        review(controller("CronJob", dev_secret_pod), namespace="acme-prod", operation="UPDATE"),
        review(controller("StatefulSet", pod()), namespace="acme-ghost"),
        review(
            pod(ephemeralContainers=[container("debug", envFrom=[{"secretRef": {"name": DEV_SECRET}}])]),
            operation="UPDATE",
            sub_resource="ephemeralcontainers",
        ),
        review(being_deleted, operation="UPDATE"),
        review(None, operation="DELETE"),
        review(pod(), namespace="acme-odd", dry_run=True),
    ]


FIXED_REVIEWS: Final = _fixed_reviews()
FIXED_BODIES: Final = tuple(json.dumps(document).encode() for document in FIXED_REVIEWS)
FIXED_OBJECTS: Final = tuple(r["request"]["object"] for r in FIXED_REVIEWS if r["request"]["object"])
# Generated pods (the property tests' strategy) add variety; they are slow to draw, so a quarter.
generated_pod_reviews = st.builds(
    lambda obj, namespace, uid: review(obj, namespace=namespace, uid=uid),
    pods(),
    st.sampled_from(
        ["acme-prod", "acme-stage", "acme-canary", "acme-dev", "acme-odd", "acme-ghost", "unbound"]
    ),
    st.uuids().map(str),
)
fixed_or_generated = st.sampled_from(["fixed", "fixed", "fixed", "generated"])


@st.composite
def base_reviews(draw: st.DrawFn) -> dict[str, Any]:
    if draw(fixed_or_generated) == "fixed":
        return copy.deepcopy(draw(st.sampled_from(FIXED_REVIEWS)))
    result: dict[str, Any] = draw(generated_pod_reviews)
    return result


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    if draw(fixed_or_generated) == "fixed":
        return copy.deepcopy(draw(st.sampled_from(FIXED_OBJECTS)))
    obj: dict[str, Any] = draw(pods())
    return deployment_of(obj) if draw(st.booleans()) else obj


NodePath = tuple[str | int, ...]


def node_paths(document: object) -> list[NodePath]:
    """Every node of a decoded JSON document, the root included (iterative: documents nest deep)."""
    found: list[NodePath] = []
    stack: list[tuple[NodePath, object]] = [((), document)]
    while stack:
        path, value = stack.pop()
        found.append(path)
        if isinstance(value, dict):
            stack.extend(((*path, key), child) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, index), child) for index, child in enumerate(value))
    return found


def _parent(document: Any, path: NodePath) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


# Strategies made once: building one inside every draw (st.sampled_from(a_new_list)) costs more than
# the draw itself.
mutations = st.sampled_from(("replace", "delete", "add-key", "wrap", "to-string", "nest-deep", "huge"))
wrappings = st.sampled_from(("list", "object", "pair"))
indexes = st.integers(min_value=0, max_value=2**16)


def mutate(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """Apply one random mutation at a random node (the root included), in place; returns the document."""
    paths = node_paths(document)
    path = paths[draw(indexes) % len(paths)]
    action = draw(mutations)
    event(f"mutation {action}")
    if not path:  # the root itself
        return document if action in ("delete", "add-key") else {"replaced": draw(junk)}
    parent = _parent(document, path)
    key = path[-1]
    current = parent[key]
    if action == "replace":
        parent[key] = draw(junk)
    elif action == "delete":
        del parent[key]
    elif action == "add-key":
        if isinstance(current, dict):
            current[draw(keys)] = draw(junk)
        else:
            parent[key] = draw(junk)
    elif action == "wrap":
        wrapping = draw(wrappings)
        parent[key] = (
            [current] if wrapping == "list" else {"k": current} if wrapping == "object" else [current] * 2
        )
    elif action == "to-string":
        parent[key] = json.dumps(current)
    elif action == "nest-deep":
        parent[key] = draw(deep_values)
    else:
        parent[key] = draw(huge_text)
    return document


@st.composite
def mutated_reviews(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(base_reviews())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        document = mutate(draw, document)
    return document


ABSENT: Final = object()


Field = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (a right value, a plausible wrong one)


def right(strategy: st.SearchStrategy[Any], *wrong: Any) -> Field:
    return strategy, st.sampled_from(wrong) if wrong else odd_text


@st.composite
def generated_reviews(draw: st.DrawFn) -> object:
    """AdmissionReviews built field by field: at every level a few fields missing, of a wrong type, or
    plausibly wrong (another apiVersion, a lower-case operation, a lone surrogate), the rest right."""

    def fields(spec: dict[str, Field]) -> dict[str, Any]:
        # A few broken fields per object: breaking all at once would stop every review at the first
        # check and never reach the rules behind it.
        broken = draw(st.sets(st.sampled_from(sorted(spec)), max_size=2))
        out: dict[str, Any] = {}
        for name, (good, plausible) in spec.items():
            if name not in broken:
                value = draw(good)
            else:  # drawn in two steps: st.one_of would flatten junk's many branches and favour it
                how = draw(st.sampled_from(["absent", "junk", "plausible"]))
                value = ABSENT if how == "absent" else draw(junk if how == "junk" else plausible)
            if value is not ABSENT:
                out[name] = value
        if draw(st.sampled_from(["plain", "plain", "plain", "extra"])) == "extra":
            for extra, value in draw(st.dictionaries(keys, junk, min_size=1, max_size=2)).items():
                out.setdefault(extra, value)
        return out

    gvk = fields(
        {
            "group": right(st.sampled_from(["", "apps", "batch"]), "core", "apps/v1"),
            "version": right(st.just("v1"), "v2", ""),
            "kind": right(
                st.sampled_from(["Pod", "Deployment", "CronJob", "Job", "ConfigMap", "Secret"]), "", "pod"
            ),
        }
    )
    names = st.text(max_size=40)
    request = fields(
        {
            "uid": right(st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=40))),
            "kind": right(st.just(gvk), {"kind": "Pod"}, {}),
            "operation": right(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]), "create", ""),
            "namespace": right(st.sampled_from(["acme-prod", "acme-stage", "acme-dev", "unbound", ""])),
            "name": right(names),
            "subResource": right(st.sampled_from(["", "ephemeralcontainers", "status"])),
            "userInfo": right(st.builds(lambda name: {"username": name}, names), {"username": None}, []),
            "object": right(objects(), {}, {"spec": []}),
            "oldObject": right(st.sampled_from([None, pod()]), {}, {"metadata": "x"}),
            "dryRun": right(st.booleans(), "true", 1, None),
        }
    )
    document = fields(
        {
            "apiVersion": right(st.just(API_VERSION), "admission.k8s.io/v1beta1", "v1"),
            "kind": right(st.just(REVIEW_KIND), "AdmissionRequest", "Pod"),
            "request": right(st.just(request), [request], None),
        }
    )
    # Occasionally the whole body is something else entirely.
    # sampled_from favours its first element (the one it shrinks to): the rare choice goes last.
    if draw(st.sampled_from(["review"] * 7 + ["junk"])) == "junk":
        return draw(junk)
    return document


# ---------------------------------------------------------------------------------------------------
# The tests.
# ---------------------------------------------------------------------------------------------------


@fuzz_settings(1000)
@given(document=mutated_reviews(), path=st.sampled_from(ENDPOINTS), ascii_only=st.booleans())
async def test_mutated_reviews_get_a_review_or_a_4xx(
    harness: Harness, document: dict[str, Any], path: str, ascii_only: bool
) -> None:
    """Valid reviews with 1-3 random mutations at any node: a valid AdmissionReview or a JSON 4xx."""
    await check_answer(harness, path, encode(document, ascii_only=ascii_only), document)


@fuzz_settings(500)
@given(document=generated_reviews(), path=st.sampled_from(ENDPOINTS), ascii_only=st.booleans())
async def test_generated_reviews_get_a_review_or_a_4xx(
    harness: Harness, document: object, path: str, ascii_only: bool
) -> None:
    """Reviews built field by field (missing keys, wrong types, unicode): a valid review or a JSON 4xx."""
    await check_answer(harness, path, encode(document, ascii_only=ascii_only), document)


@st.composite
def damaged_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are almost a review: cut short, bytes flipped, brackets or quotes inserted."""
    body = bytearray(draw(st.sampled_from(FIXED_BODIES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        position = draw(st.integers(min_value=0, max_value=len(body)))
        how = draw(st.sampled_from(["cut", "flip", "insert"]))
        if how == "cut":
            del body[position:]
        elif how == "flip" and position < len(body):
            body[position] = draw(st.integers(min_value=0, max_value=255))
        else:
            body[position:position] = draw(
                st.sampled_from([b"[", b"{", b"]", b"}", b'"', b"\\", b",", b"\xff"])
            )
    return bytes(body)


@fuzz_settings(1000)
@given(
    body=st.one_of(damaged_bodies(), st.binary(max_size=512), st.text(max_size=200).map(str.encode)),
    path=st.sampled_from(ENDPOINTS),
)
async def test_damaged_and_random_bytes_never_crash(harness: Harness, body: bytes, path: str) -> None:
    """Cut, flipped and random bytes: a JSON 4xx, or (when the damage left valid JSON) a valid review."""
    try:
        document: object = json.loads(body.decode("utf-8"))
    except ValueError:
        document = None
    await check_answer(harness, path, body, document)


@fuzz_settings(300)
@given(
    depth=st.one_of(
        st.integers(min_value=MAX_JSON_DEPTH - 12, max_value=MAX_JSON_DEPTH + 4),
        st.integers(min_value=MAX_JSON_DEPTH, max_value=4 * MAX_JSON_DEPTH),
    ),
    shape=st.sampled_from(["list", "dict", "mixed"]),
    where=st.sampled_from(["annotations", "env", "root-extra", "request-extra"]),
    path=st.sampled_from(ENDPOINTS),
)
async def test_deep_nesting_around_the_limit(
    harness: Harness, depth: int, shape: str, where: str, path: str
) -> None:
    """Nesting just inside the depth limit is judged; beyond it, a 400 that says so."""
    document = review(pod())
    deep = nest(depth, shape, "leaf")
    obj = document["request"]["object"]
    if where == "annotations":
        obj["metadata"]["annotations"] = {"x": deep}
    elif where == "env":
        obj["spec"]["containers"][0]["env"] = [{"name": "X", "value": deep}]
    elif where == "root-extra":
        document["extra"] = deep
    else:
        document["request"]["extra"] = deep
    answer = await check_answer(harness, path, encode(document, ascii_only=True), document)
    if answer.status != 200:
        assert answer.status == 400
        assert "nested deeper" in json.loads(answer.body)["error"]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_a_body_exactly_at_the_size_limit_is_judged(
    harness: Harness, path: str, content_type: str
) -> None:
    """A review padded with one huge string to exactly the body limit is answered; one byte more is a 413."""
    document = review(pod())
    document["request"]["object"]["metadata"]["annotations"] = {"pad": ""}
    size = len(encode(document, ascii_only=True))
    document["request"]["object"]["metadata"]["annotations"]["pad"] = "p" * (MAX_BODY_BYTES - size)
    body = encode(document, ascii_only=True)
    assert len(body) == MAX_BODY_BYTES
    answer = await harness.post(path, body, content_type)
    assert answer.status == 200
    assert json.loads(answer.body)["response"]["uid"] == document["request"]["uid"]
    assert len(harness.new_audit_lines()) == 1

    too_big = await harness.post(path, body + b" ", content_type)
    assert too_big.status == 413
    assert "error" in json.loads(too_big.body)
    assert harness.new_audit_lines() == []
    assert not harness.errors.records


@pytest.mark.parametrize("operation", [["CREATE"], {"op": "CREATE"}])
async def test_an_unhashable_operation_is_a_400(harness: Harness, operation: object) -> None:
    """request.operation of a list or object is a request error (400), like any other wrong operation."""
    document = review(pod())
    document["request"]["operation"] = operation
    answer = await harness.post("/mutate", encode(document, ascii_only=True))
    assert harness.take_errors() == []
    assert answer.status == 400
    assert "request.operation" in json.loads(answer.body)["error"]
