"""The AdmissionReview wire format (``admission.k8s.io/v1``) and strict parsing of a decoded body.

The TypedDicts keep Kubernetes' camelCase names so that they read like the API reference. Parsing turns
a decoded body into a ``ReviewRequest`` or raises ``BadRequest``: an error about the *request* (wrong
apiVersion, no uid, a non-object where an object belongs), which the server answers with HTTP 4xx. An
odd *object under review* is not a request error; the policy judges it (see ``object_reader.InvalidObject``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict, cast, get_args

API_VERSION: Final = "admission.k8s.io/v1"
REVIEW_KIND: Final = "AdmissionReview"
PATCH_TYPE_JSON: Final = "JSONPatch"

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: Final[frozenset[str]] = frozenset(get_args(Operation))


class BadRequest(Exception):
    """An error about the request itself: the server answers HTTP ``status`` with ``{"error": message}``.

    Messages never echo values from the body: they name the field and what was expected.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TooDeep(BadRequest):
    """The body nests deeper than the webhook accepts (a BadRequest; its own class so callers need not
    read the message to tell it from other decoding errors)."""


# --- Wire format: the request ------------------------------------------------------------------------


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class _AdmissionRequestRequired(TypedDict):
    uid: str
    kind: GroupVersionKind
    operation: Operation


class AdmissionRequest(_AdmissionRequestRequired, total=False):
    resource: GroupVersionResource
    subResource: str
    requestKind: GroupVersionKind
    requestResource: GroupVersionResource
    requestSubResource: str
    name: str
    namespace: str
    userInfo: UserInfo
    object: dict[str, Any] | None
    oldObject: dict[str, Any] | None
    dryRun: bool
    options: dict[str, Any] | None


class AdmissionReviewRequest(TypedDict):
    apiVersion: str
    kind: str
    request: AdmissionRequest


# --- Wire format: the response -----------------------------------------------------------------------


class Status(TypedDict):
    code: int
    message: str
    reason: str


class _AdmissionResponseRequired(TypedDict):
    uid: str
    allowed: bool


class AdmissionResponse(_AdmissionResponseRequired, total=False):
    status: Status
    patchType: Literal["JSONPatch"]
    patch: str  # base64 of the JSON Patch document
    warnings: list[str]
    auditAnnotations: dict[str, str]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


# --- Parsed request ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """The parts of an AdmissionRequest the webhook uses, type-checked."""

    uid: str
    group: str
    version: str
    kind: str
    operation: Operation
    sub_resource: str
    namespace: str
    name: str
    username: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool


def _optional_str(parent: Mapping[str, Any], key: str, where: str = "request") -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{where}.{key}: must be a string")
    return value


def _optional_object(request: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"request.{key}: must be an object")
    return cast(dict[str, Any], value)


def parse_review(body: object) -> ReviewRequest:
    """Check a decoded AdmissionReview strictly and return its request; raises BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("body: must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != API_VERSION:
        raise BadRequest(f"apiVersion: must be {API_VERSION}")
    if body.get("kind") != REVIEW_KIND:
        raise BadRequest(f"kind: must be {REVIEW_KIND}")
    request = body.get("request")
    if request is None:
        raise BadRequest("request: missing")
    if not isinstance(request, dict):
        raise BadRequest("request: must be an object")

    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadRequest("request.uid: missing or not a non-empty string")

    kind = request.get("kind")
    if not isinstance(kind, dict):
        raise BadRequest("request.kind: missing or not an object")
    gvk = []
    for key in ("group", "version", "kind"):
        value = kind.get(key, "")
        if not isinstance(value, str):
            raise BadRequest(f"request.kind.{key}: must be a string")
        gvk.append(value)
    if not gvk[2]:
        raise BadRequest("request.kind.kind: missing")

    operation = request.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:  # a list or dict is unhashable
        raise BadRequest(f"request.operation: must be one of {', '.join(sorted(OPERATIONS))}")

    obj = _optional_object(request, "object")
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise BadRequest(f"request.object: must be an object for {operation}")
    old_object = _optional_object(request, "oldObject")

    user = request.get("userInfo")
    username = ""
    if user is not None:
        if not isinstance(user, dict):
            raise BadRequest("request.userInfo: must be an object")
        username = _optional_str(user, "username", "request.userInfo")

    dry_run = request.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise BadRequest("request.dryRun: must be a boolean")

    return ReviewRequest(
        uid=uid,
        group=gvk[0],
        version=gvk[1],
        kind=gvk[2],
        operation=cast(Operation, operation),
        sub_resource=_optional_str(request, "subResource"),
        namespace=_optional_str(request, "namespace"),
        name=_optional_str(request, "name"),
        username=username,
        object=obj,
        old_object=old_object,
        dry_run=dry_run,
    )
