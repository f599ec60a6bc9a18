"""Review of whole rendered manifests: what ``kubectl kustomize`` and ``helm template`` print, or a folder.

``gtc-admission review`` of a stream: every object of every YAML document (a ``List`` or ``*List`` is
opened) is judged as a CREATE in its ``metadata.namespace`` or ``--namespace`` by
``offline.review_document``, as ``/mutate`` then ``/validate`` would judge it. Only the kinds the webhook
judges are reviewed (Pods, the workload controllers of ``policy.CONTROLLER_TEMPLATES``, v1 Secrets);
every other object is counted as not judged. A document that cannot be reviewed is reported with its
file, its number (1-based, as YAML counts documents) and its first line, and the stream goes on, so that
one run shows every problem.

Nothing here quotes the input: a Secret's values may be in it. Errors name the file, the document and
the field; YAML's own messages lose anything quoted from the input (a tag, a character).

Layout: ``split_text`` (text -> objects, no I/O), ``read_folder`` (a folder -> objects),
``review_manifests`` (objects -> outcomes), ``Tally`` (the summary), ``finding_lines`` (text).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import yaml

from gtc_admission.admission import MAX_JSON_DEPTH, decode_body
from gtc_admission.bindings import BindingSource
from gtc_admission.config import Config
from gtc_admission.offline import OFFLINE_USER, ReviewInputError, check_shape, review_document, yaml_problem
from gtc_admission.policy import CONTROLLER_TEMPLATES
from gtc_admission.review import REVIEW_KIND, BadRequest, TooDeep

# What the webhook judges, by (API group, kind); the kinds the deploy manifests send it.
JUDGED_KINDS: Final = frozenset({("", "Pod"), ("", "Secret"), *CONTROLLER_TEMPLATES})
# Files read from a folder (as ``kubectl apply -R -f`` reads them), compared case-insensitively.
MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
STDIN_SOURCE: Final = "stdin"
# The decision of an object the webhook does not judge (records of ``-o json``; the audit line has
# allowed, denied and warned).
NOT_JUDGED: Final = "not-judged"
LIST_SUFFIX: Final = "List"
OFFLINE_ENDPOINT: Final = "offline"  # the audit field endpoint of every record

# A document separator as kubectl's YAML reader splits on it: a line of "---", then only blanks or a
# comment. Splitting here (instead of letting the parser run through the whole text) numbers documents
# exactly, bounds aliases and size per document, and lets a broken document not hide the ones after it.
_SEPARATOR: Final = re.compile(r"^---[ \t\r]*(?:#[^\n]*)?$", re.MULTILINE)


class _Loader(Protocol):
    def check_data(self) -> bool: ...
    def get_data(self) -> Any: ...
    def dispose(self) -> None: ...


# libyaml's loader is about ten times faster than the pure Python one; both build the same objects, and
# the same limits (check_shape) apply to what they build.
_LOADER: Final[Callable[[str], _Loader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Where:
    """Where an object is in the input: file (or stdin), YAML document, first line, item of a List."""

    source: str
    document: int | None = None  # None: the whole file (it cannot be read)
    line: int = 0
    item: int | None = None

    def __str__(self) -> str:
        if self.document is None:
            return self.source
        text = f"{self.source} document {self.document} (line {self.line})"
        return text if self.item is None else f"{text} item {self.item}"


@dataclass(frozen=True)
class Manifest:
    """One object of the stream, as parsed."""

    where: Where
    body: dict[str, Any]


@dataclass(frozen=True)
class BadDocument:
    """A document (or file) that cannot be reviewed: CLI exit 2. The message never quotes the input."""

    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Reviewed:
    """One object's record: the audit line's fields, plus where it is (source, document, line, item)."""

    where: Where
    record: dict[str, Any]

    @property
    def decision(self) -> str:
        return str(self.record["decision"])


@dataclass(frozen=True)
class Failed:
    """An unexpected error while reviewing one object (CLI exit 3): only the exception's type is kept,
    as its message could quote the input."""

    where: Where
    error: str


Outcome = Reviewed | BadDocument | Failed


# --- Parsing -------------------------------------------------------------------------------------------


def _chunks(text: str) -> Iterator[tuple[bool, int, str]]:
    """(after a separator?, first line, text) of each part of the text between separators."""
    start, line, after = 0, 1, False
    for match in _SEPARATOR.finditer(text):
        yield after, line, text[start : match.start()]
        # The separator line has no newline of its own: its line, then the next one.
        line += text.count("\n", start, match.start()) + 1
        start, after = match.end() + 1, True
    yield after, line, text[start:]


def _yaml_documents(chunk: str) -> list[object]:
    """Every document of one chunk (one, mostly; none for a blank or comment-only one)."""
    loader = _LOADER(chunk)
    try:
        documents: list[object] = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    finally:
        loader.dispose()


def split_text(text: str, source: str) -> Iterator[Manifest | BadDocument]:
    """The objects of one input text, Lists opened, in order; a BadDocument for what cannot be read."""
    if text.lstrip().startswith(("{", "[")):  # JSON, as `kubectl get -o json` prints it: one document
        try:
            whole = decode_body(text.encode("utf-8"))
        except TooDeep:
            yield BadDocument(Where(source, 1, 1), f"nests deeper than {MAX_JSON_DEPTH} levels")
            return
        except BadRequest:
            pass  # read as YAML (JSON is YAML), whose parser says where it is wrong
        else:
            yield from _objects(whole, Where(source, 1, 1))
            return
    number = 0
    for after_separator, line, chunk in _chunks(text):
        try:
            documents = _yaml_documents(chunk)
        except yaml.YAMLError as exc:
            # After a separator a chunk is a document even when the parser cannot read it.
            number += 1
            yield BadDocument(Where(source, number, line), f"not YAML ({yaml_problem(exc, line - 1)})")
            continue
        except RecursionError:
            number += 1
            yield BadDocument(Where(source, number, line), f"nests deeper than {MAX_JSON_DEPTH} levels")
            continue
        if not documents and after_separator:
            number += 1  # an empty document after "---" (helm prints them): counted, nothing to review
        for document in documents:
            number += 1
            if document is not None:
                yield from _objects(document, Where(source, number, line))


def _objects(document: object, where: Where) -> Iterator[Manifest | BadDocument]:
    try:
        check_shape(document)
    except ReviewInputError as exc:
        yield BadDocument(where, _without_input(str(exc)))
        return
    if not isinstance(document, dict):
        yield BadDocument(where, "not a Kubernetes object (a mapping with apiVersion and kind)")
        return
    kind = document.get("kind")
    if not (isinstance(kind, str) and kind.endswith(LIST_SUFFIX) and "items" in document):
        yield Manifest(where, document)
        return
    items = document["items"]
    if not isinstance(items, list):
        yield BadDocument(where, f"{LIST_SUFFIX} items must be a list")
        return
    api_version = document.get("apiVersion")
    # A typed list (PodList, as the API server returns it) leaves kind and apiVersion out of its items.
    item_kind = kind.removesuffix(LIST_SUFFIX) if kind != LIST_SUFFIX else None
    for number, item in enumerate(items, start=1):
        at = Where(where.source, where.document, where.line, number)
        if not isinstance(item, dict):
            yield BadDocument(at, "not a Kubernetes object (a mapping with apiVersion and kind)")
        elif _is_list(item):
            yield BadDocument(at, f"a {LIST_SUFFIX} inside a {LIST_SUFFIX}: render it flat")
        elif item_kind is not None and "kind" not in item:
            yield Manifest(at, {"apiVersion": api_version, "kind": item_kind, **item})
        else:
            yield Manifest(at, item)


def _is_list(body: dict[str, Any]) -> bool:
    kind = body.get("kind")
    return isinstance(kind, str) and kind.endswith(LIST_SUFFIX) and "items" in body


def is_single(text: str, first: list[Manifest | BadDocument]) -> bool:
    """Whether an input is reviewed as one object (the AdmissionReview response is printed, as before
    streams were read): at most the first two objects of ``split_text`` are enough to tell."""
    if not text.strip():
        return True  # offline.parse_input says "INPUT is empty"
    if len(first) != 1:
        return False
    only = first[0]
    if isinstance(only, BadDocument):
        return only.where.document == 1 and only.where.item is None
    return only.where.item is None


# --- Files ---------------------------------------------------------------------------------------------


def manifest_files(folder: str) -> tuple[list[str], list[BadDocument]]:
    """Files under ``folder`` ending in MANIFEST_SUFFIXES, recursively, sorted by path parts; names that
    start with a dot (.git, .github) are skipped, symbolic links to folders not followed."""
    found: list[str] = []
    errors: list[BadDocument] = []

    def unreadable(error: OSError) -> None:
        errors.append(BadDocument(Where(str(error.filename)), f"cannot list: {error.strerror}"))

    for directory, folders, files in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [
            os.path.join(directory, name)
            for name in files
            if not name.startswith(".") and name.lower().endswith(MANIFEST_SUFFIXES)
        ]
    return sorted(found, key=lambda path: path.split(os.sep)), errors


def read_folder(folder: str) -> Iterator[Manifest | BadDocument]:
    """The objects of every manifest file under ``folder``, file after file (one file in memory)."""
    files, errors = manifest_files(folder)
    yield from errors
    if not files and not errors:
        suffixes = ", ".join(f"*{suffix}" for suffix in MANIFEST_SUFFIXES)
        yield BadDocument(Where(folder), f"no {suffixes} file in this folder")
    for path in files:
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            yield BadDocument(
                Where(path), f"cannot read: {getattr(exc, 'strerror', None) or type(exc).__name__}"
            )
            continue
        yield from split_text(text, path)


# --- Review --------------------------------------------------------------------------------------------


def _metadata_text(body: dict[str, Any], key: str) -> str:
    metadata = body.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""


def _group_kind(body: dict[str, Any]) -> tuple[str, str] | None:
    """(group, kind) of an object, or of the object of an AdmissionReview; None when it has none."""
    if body.get("kind") == REVIEW_KIND:
        request = body.get("request")
        gvk = request.get("kind") if isinstance(request, dict) else None
        if not isinstance(gvk, dict):
            return None
        group, kind = gvk.get("group", ""), gvk.get("kind")
    else:
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not isinstance(api_version, str) or not api_version:
            return None
        group = api_version.rpartition("/")[0]
    if not isinstance(group, str) or not isinstance(kind, str) or not kind:
        return None
    return group, kind


def _own_namespace(body: dict[str, Any]) -> object:
    """request.namespace of an AdmissionReview, metadata.namespace of an object (review_document checks
    its type)."""
    parent = body.get("request") if body.get("kind") == REVIEW_KIND else body.get("metadata")
    return parent.get("namespace") if isinstance(parent, dict) else None


def _without_input(message: str) -> str:
    # offline.py speaks of the one INPUT; here the document is named before the message.
    return message.replace(" of INPUT", "").replace("INPUT ", "")


def _located(record: dict[str, Any], where: Where) -> dict[str, Any]:
    return {
        **record,
        "source": where.source,
        "document": where.document,
        "line": where.line,
        "item": where.item,
    }


def not_judged_record(body: dict[str, Any], kind: str, where: Where) -> dict[str, Any]:
    """The record of an object the webhook never sees, with the audit line's fields."""
    record: dict[str, Any] = {
        "uid": "",
        "endpoint": OFFLINE_ENDPOINT,
        "kind": kind,
        "namespace": _metadata_text(body, "namespace"),
        "name": _metadata_text(body, "name") or _metadata_text(body, "generateName"),
        "operation": "CREATE",
        "subResource": "",
        "user": OFFLINE_USER,
        "dryRun": False,
        "component": None,
        "env": None,
        "tenant": None,
        "team": None,
        "decision": NOT_JUDGED,
        "rules": [],
        "messages": [],
        "patched": [],
        "enforcement": None,
    }
    return _located(record, where)


def review_manifest(
    manifest: Manifest, *, config: Config, bindings: BindingSource, namespace: str | None
) -> Outcome:
    """One object judged as a CREATE (an AdmissionReview as it says), or counted as not judged."""
    body, where = manifest.body, manifest.where
    group_kind = _group_kind(body)
    if group_kind is None:
        return BadDocument(where, "not a Kubernetes object: apiVersion and kind must be set")
    if group_kind not in JUDGED_KINDS:
        return Reviewed(where, not_judged_record(body, group_kind[1], where))
    if not namespace and _own_namespace(body) in (None, ""):
        # kubectl would use the context's namespace, which offline we cannot know: judging it as unbound
        # would admit a worker that the webhook refuses in the namespace it really lands in.
        return BadDocument(where, f"a {group_kind[1]} without metadata.namespace: pass --namespace NS")
    try:
        result = review_document(body, config=config, bindings=bindings, namespace=namespace)
    except ReviewInputError as exc:
        return BadDocument(where, _without_input(str(exc)))
    except Exception as exc:
        return Failed(where, type(exc).__name__)
    # review_document leaves endpoint "mutate" when /mutate already refused; a record says offline.
    return Reviewed(where, _located({**result.audit, "endpoint": OFFLINE_ENDPOINT}, where))


def review_manifests(
    items: Iterable[Manifest | BadDocument], *, config: Config, bindings: BindingSource, namespace: str | None
) -> Iterator[Outcome]:
    """Every object of the stream reviewed, in order; bad documents passed through."""
    for item in items:
        if isinstance(item, BadDocument):
            yield item
        else:
            yield review_manifest(item, config=config, bindings=bindings, namespace=namespace)


# --- Report --------------------------------------------------------------------------------------------


def finding_lines(record: dict[str, Any]) -> list[str]:
    """``Kind namespace/name: [rule-id] message``, one per finding (the messages name field paths)."""
    subject = f"{record['kind']} {record['namespace']}/{record['name']}"
    return [f"{subject}: {message}" for message in record["messages"]]


@dataclass
class Tally:
    """Counts of a stream review, for the summary line and the exit code."""

    allowed: int = 0
    warned: int = 0
    denied: int = 0
    not_judged: int = 0
    bad: int = 0
    failed: int = 0

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, BadDocument):
            self.bad += 1
        elif isinstance(outcome, Failed):
            self.failed += 1
        elif outcome.decision == "denied":
            self.denied += 1
        elif outcome.decision == "warned":
            self.warned += 1
        elif outcome.decision == NOT_JUDGED:
            self.not_judged += 1
        else:
            self.allowed += 1

    @property
    def judged(self) -> int:
        return self.allowed + self.warned + self.denied

    def line(self) -> str:
        objects = self.judged + self.not_judged
        text = (
            f"{objects} objects: {self.judged} judged ({self.allowed} admitted, {self.warned} warned, "
            f"{self.denied} denied), {self.not_judged} not judged"
        )
        if self.bad:
            text += f"; {self.bad} not reviewed (bad input)"
        if self.failed:
            text += f"; {self.failed} not reviewed (internal error)"
        return text
