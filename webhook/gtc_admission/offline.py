"""Offline review (``gtc-admission review``): what the webhook would answer, without a cluster.

INPUT is an AdmissionReview (JSON or YAML) or one bare Pod / workload manifest. A manifest is wrapped in
an AdmissionReview as a CREATE by ``OFFLINE_USER`` with a generated uid, in ``namespace`` or the
manifest's ``metadata.namespace``. Only the config's static bindings (``namespaces:``) apply.

Both webhooks are applied in the order the API server runs them: ``/mutate``, then ``/validate`` on the
patched object. The result is one AdmissionReview response: the mutation's patch, the stricter verdict,
the warnings of both.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

import yaml

from gtc_admission.admission import (
    MAX_JSON_DEPTH,
    Decision,
    Outcome,
    decode_body,
    handle_review,
    review_with_edits,
)
from gtc_admission.bindings import BindingSource, StaticBindings
from gtc_admission.config import Config
from gtc_admission.patch import apply_edits
from gtc_admission.review import API_VERSION, REVIEW_KIND, BadRequest, TooDeep

OFFLINE_USER: Final = "gtc-admission:offline-review"
# YAML anchors can make a small text expand into a huge tree; refuse past this many nodes.
MAX_NODES: Final = 1_000_000
# What PyYAML's messages quote from the input (tags, characters): 'x' or "x", with the space before it;
# one punctuation character or a token name (YAML syntax: "expected ',' or ']', but got '<stream end>'")
# is no part of a value and is kept.
_QUOTED: Final = re.compile(r"""(\s*)(['"])(.*?)\2""")
_SYNTAX: Final = re.compile(r"[^\sA-Za-z0-9\\]|<[a-z ]+>")


class ReviewInputError(ValueError):
    """The INPUT cannot be reviewed (CLI exit 2); the message says what is wrong."""


@dataclass(frozen=True)
class OfflineResult:
    review: dict[str, Any]  # the AdmissionReview response it would send (mutation and validation applied)
    allowed: bool
    audit: dict[str, Any]


def check_shape(document: object) -> None:
    """Bound depth and size of a YAML-loaded tree without recursion (aliases may even make it cyclic)."""
    stack: list[tuple[object, int]] = [(document, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        children: list[object]
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ReviewInputError(f"INPUT nests deeper than {MAX_JSON_DEPTH} levels")
        nodes += len(children)
        if nodes > MAX_NODES:
            raise ReviewInputError(f"INPUT has more than {MAX_NODES} values (YAML aliases?)")
        stack.extend((child, depth + 1) for child in children)


def yaml_problem(error: yaml.YAMLError, first_line: int = 0) -> str:
    """What the YAML parser found wrong and where (``first_line``: lines before the parsed text), without
    what it quotes from the input: a tag or a character could be part of a secret value."""
    problem = getattr(error, "problem", None) or type(error).__name__
    kept = _QUOTED.sub(lambda quoted: quoted[0] if _SYNTAX.fullmatch(quoted[3]) else "", problem)
    rest = _QUOTED.sub("", kept)
    if "'" in rest or '"' in rest:  # an unpaired quote: what follows it may be input
        kept = re.split("['\"]", rest, maxsplit=1)[0]
    problem = kept.strip()
    mark = getattr(error, "problem_mark", None)
    where = f" at line {first_line + mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def parse_input(text: str) -> dict[str, Any]:
    """JSON or YAML text -> exactly one mapping; ReviewInputError otherwise."""
    if not text.strip():
        raise ReviewInputError("INPUT is empty")
    if text.lstrip().startswith(("{", "[")):
        try:
            document = decode_body(text.encode("utf-8"))
        except TooDeep:
            # As YAML it would nest just as deep (JSON is YAML); PyYAML would only take long to say so.
            raise ReviewInputError(f"INPUT nests deeper than {MAX_JSON_DEPTH} levels") from None
        except BadRequest as exc:
            json_error: str | None = exc.message.removeprefix("body: ")
        else:
            json_error = None
    else:
        json_error = "not JSON"
    if json_error is not None:
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ReviewInputError(
                f"INPUT is neither JSON ({json_error}) nor YAML ({yaml_problem(exc)})"
            ) from None
        except RecursionError:
            raise ReviewInputError(f"INPUT nests deeper than {MAX_JSON_DEPTH} levels") from None
        if len(documents) != 1:
            raise ReviewInputError(
                f"INPUT holds {len(documents)} YAML documents; review one object at a time"
            )
        document = documents[0]
        check_shape(document)
    if not isinstance(document, dict):
        raise ReviewInputError("INPUT must be an AdmissionReview or one Kubernetes object (a mapping)")
    return document


def _wrap_manifest(manifest: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    kind = manifest.get("kind")
    api_version = manifest.get("apiVersion")
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
        raise ReviewInputError(
            "INPUT has no kind/apiVersion: expected an AdmissionReview or a Kubernetes object"
        )
    if kind.endswith("List"):
        raise ReviewInputError(f"INPUT is a {kind}; review one object at a time")
    group, _, version = api_version.rpartition("/")
    metadata = manifest.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ReviewInputError("INPUT metadata must be a mapping")
    metadata = metadata or {}
    own = metadata.get("namespace")
    if own is not None and not isinstance(own, str):
        raise ReviewInputError("INPUT metadata.namespace must be a string")
    if namespace and own and own != namespace:
        raise ReviewInputError(f"--namespace {namespace} does not match metadata.namespace {own} of INPUT")
    target = namespace or own
    if not target:
        raise ReviewInputError("INPUT has no metadata.namespace: pass --namespace NS")
    name = metadata.get("name")
    return {
        "apiVersion": API_VERSION,
        "kind": REVIEW_KIND,
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "operation": "CREATE",
            "namespace": target,
            "name": name if isinstance(name, str) else "",
            "userInfo": {"username": OFFLINE_USER},
            "object": manifest,
            "dryRun": False,
        },
    }


def _with_namespace(review: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    request = review.get("request")
    if not namespace or not isinstance(request, dict):
        return review
    own = request.get("namespace")
    if own and own != namespace:
        raise ReviewInputError(f"--namespace {namespace} does not match request.namespace {own} of INPUT")
    return {**review, "request": {**request, "namespace": namespace}}


def _combine(mutated: Outcome, validated: Outcome | None) -> OfflineResult:
    if validated is None:
        return OfflineResult(review=mutated.review, allowed=mutated.decision != "denied", audit=mutated.audit)
    first, second = mutated.review["response"], validated.review["response"]
    allowed = bool(first["allowed"]) and bool(second["allowed"])
    rules = list(dict.fromkeys([*mutated.rules, *validated.rules]))
    warnings = list(dict.fromkeys([*first.get("warnings", []), *second.get("warnings", [])]))
    decision: Decision = "denied" if not allowed else ("warned" if warnings else "allowed")
    response = {key: value for key, value in first.items() if key not in ("status", "warnings")}
    response["allowed"] = allowed
    patched = mutated.audit["patched"]
    if not allowed:
        # A refused object is not patched: show the refusal only, as the API server would apply it.
        response.pop("patch", None)
        response.pop("patchType", None)
        response["status"] = second.get("status", first.get("status"))
        patched = []
    if warnings:
        response["warnings"] = warnings
    response["auditAnnotations"] = {"decision": decision, "rules": ",".join(rules) if rules else "none"}
    audit = {
        **mutated.audit,
        "endpoint": "offline",
        "decision": decision,
        "rules": rules,
        "messages": list(dict.fromkeys([*mutated.audit["messages"], *validated.audit["messages"]])),
        "patched": patched,
    }
    review = {**mutated.review, "response": response}
    return OfflineResult(review=review, allowed=allowed, audit=audit)


def review_text(text: str, *, config: Config, namespace: str | None) -> OfflineResult:
    """Review INPUT text as the webhook would (static bindings only); ReviewInputError on bad input."""
    return review_document(
        parse_input(text), config=config, bindings=StaticBindings(config.namespaces), namespace=namespace
    )


def review_document(
    document: dict[str, Any], *, config: Config, bindings: BindingSource, namespace: str | None
) -> OfflineResult:
    """Review one parsed AdmissionReview or object as the webhook would, with the given namespace bindings
    (the config's static ones offline, the cluster's labels for an audit); ReviewInputError on bad input."""
    if document.get("kind") == REVIEW_KIND:
        body = _with_namespace(document, namespace)
    else:
        body = _wrap_manifest(document, namespace)
    try:
        mutated, edits = review_with_edits(body, endpoint="mutate", config=config, bindings=bindings)
    except BadRequest as exc:
        raise ReviewInputError(f"INPUT is not a valid AdmissionReview: {exc.message}") from None
    if mutated.decision == "denied":
        return _combine(mutated, None)
    request = body["request"]
    obj = request.get("object")
    if edits and isinstance(obj, dict):
        body = {**body, "request": {**request, "object": apply_edits(obj, edits)}}
    validated = handle_review(body, endpoint="validate", config=config, bindings=bindings)
    return _combine(mutated, validated)
