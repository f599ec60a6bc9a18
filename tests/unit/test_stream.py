"""Review of whole rendered manifests: splitting a stream into objects, judging each, the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gtc_admission import constants as c
from gtc_admission import stream
from gtc_admission.offline import MAX_NODES
from gtc_admission.stream import BadDocument, Failed, Manifest, Reviewed, Where
from tests.unit.conftest import BINDINGS, CANARY, CONFIG, DEV_SECRET, container, controller, pod, review

ROOT = Path(__file__).resolve().parents[2]


def split(text: str, source: str = "in.yaml") -> list[Manifest | BadDocument]:
    return list(stream.split_text(text, source))


def judge(items: list[Manifest | BadDocument], namespace: str | None = None) -> list[stream.Outcome]:
    return list(stream.review_manifests(items, config=CONFIG, bindings=BINDINGS, namespace=namespace))


def dump(*objects: object) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def in_namespace(obj: dict[str, Any], namespace: str = "acme-prod", name: str = "w") -> dict[str, Any]:
    return {**obj, "metadata": {**obj.get("metadata", {}), "name": name, "namespace": namespace}}


CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "acme-prod"}}
DEV_SECRET_READER = in_namespace(
    controller("Deployment", pod(containers=[container(envFrom=[{"secretRef": {"name": DEV_SECRET}}])])),
    name="old-worker",
)


def secret(name: str = DEV_SECRET, namespace: str = "acme-prod") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"TELEGRAM_TOKEN": CANARY},
        "data": {"OPENAI_API_KEY": CANARY},
    }


# --------------------------------------------------------------------------------------------
# Splitting: documents, Lists, numbers and lines
# --------------------------------------------------------------------------------------------


def test_documents_are_numbered_with_their_first_line() -> None:
    """kubectl kustomize output: one object per document, numbered from 1 with the line it starts on."""
    text = "apiVersion: v1\nkind: A\n---\napiVersion: v1\nkind: B\n---\n\napiVersion: v1\nkind: C\n"
    items = split(text)
    assert [(i.where.document, i.where.line) for i in items] == [(1, 1), (2, 4), (3, 7)]
    assert all(isinstance(i, Manifest) for i in items)
    assert [i.body["kind"] for i in items if isinstance(i, Manifest)] == ["A", "B", "C"]


def test_helm_output_counts_empty_documents() -> None:
    """helm template output: a leading '---', source comments, empty documents counted but not objects."""
    text = (
        "---\n# Source: chart/templates/a.yaml\napiVersion: v1\nkind: A\n"
        "---\n# Source: chart/templates/disabled.yaml\n"
        "--- # a comment after the separator\napiVersion: v1\nkind: B\n"
    )
    items = split(text)
    assert [(i.where.document, i.where.line) for i in items] == [(1, 2), (3, 8)]


def test_windows_line_ends_split_the_same() -> None:
    """CRLF files split at the same separators."""
    items = split("apiVersion: v1\r\nkind: A\r\n---\r\napiVersion: v1\r\nkind: B\r\n")
    assert [i.body["kind"] for i in items if isinstance(i, Manifest)] == ["A", "B"]


def test_a_list_is_opened_and_its_items_numbered() -> None:
    """kind: List (kubectl get -o yaml) yields its items, each located by document and item."""
    text = dump({"apiVersion": "v1", "kind": "List", "items": [CONFIG_MAP, secret()]})
    items = split(text)
    assert [str(i.where) for i in items] == [
        "in.yaml document 1 (line 1) item 1",
        "in.yaml document 1 (line 1) item 2",
    ]


def test_a_typed_list_gives_its_items_kind_and_api_version() -> None:
    """A PodList as the API server returns it: items without kind/apiVersion are Pods of v1."""
    bare = {key: value for key, value in pod().items() if key not in ("kind", "apiVersion")}
    items = split(json.dumps({"apiVersion": "v1", "kind": "PodList", "items": [bare]}), "pods.json")
    assert isinstance(items[0], Manifest)
    assert items[0].body["kind"] == "Pod" and items[0].body["apiVersion"] == "v1"
    assert str(items[0].where) == "pods.json document 1 (line 1) item 1"


def test_a_kind_ending_in_list_without_items_is_an_object() -> None:
    """A custom kind such as AllowList, with no items, is one object (not judged later)."""
    items = split("apiVersion: example.com/v1\nkind: AllowList\nspec: {}\n")
    assert len(items) == 1 and isinstance(items[0], Manifest)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param({"apiVersion": "v1", "kind": "List", "items": "x"}, "items must be a list", id="items"),
        pytest.param(
            {"apiVersion": "v1", "kind": "List", "items": ["x"]}, "not a Kubernetes object", id="item"
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "List", "items": [{"kind": "List", "items": []}]},
            "a List inside a List",
            id="nested",
        ),
        pytest.param(["a", "b"], "not a Kubernetes object", id="sequence"),
        pytest.param("text", "not a Kubernetes object", id="scalar"),
    ],
)
def test_bad_documents_name_what_is_wrong(document: object, expected: str) -> None:
    """Documents that are no objects are BadDocuments saying why."""
    items = split(dump(CONFIG_MAP, document))
    assert isinstance(items[0], Manifest)
    bad = items[1]
    assert isinstance(bad, BadDocument) and bad.where.document == 2
    assert expected in bad.message


def test_a_broken_document_does_not_hide_the_next_ones() -> None:
    """A YAML error is reported with document number and line of the file; the documents after it are read."""
    text = "apiVersion: v1\nkind: A\n---\napiVersion: v1\nkind: [B\n---\napiVersion: v1\nkind: C\n"
    items = split(text)
    assert isinstance(items[0], Manifest) and isinstance(items[2], Manifest)
    bad = items[1]
    assert isinstance(bad, BadDocument)
    assert bad.where == Where("in.yaml", 2, 4)
    assert bad.message.startswith("not YAML (") and "at line 6" in bad.message


def test_json_file_is_one_document() -> None:
    """A JSON file (kubectl get -o json) is read as JSON; invalid JSON falls back to YAML for the error."""
    assert isinstance(split(json.dumps(CONFIG_MAP), "cm.json")[0], Manifest)
    bad = split('{"kind": "ConfigMap",', "cm.json")[0]
    assert isinstance(bad, BadDocument) and bad.where == Where("cm.json", 1, 1)
    assert bad.message.startswith("not YAML")


SHAPES = [
    # libyaml stops at 1000 levels with its own words ("exceeded maximum nesting depth").
    pytest.param("- " * 2000 + "x\n", "nest", id="deep-block"),
    pytest.param("a: " + "[" * 100 + "]" * 100 + "\n", "deeper than 64", id="deep-flow"),
    pytest.param("a: &a [*a]\n", "deeper than 64", id="recursive-alias"),
    pytest.param("[" * 5000 + "]" * 5000, "nest", id="deep-flow-2"),
    pytest.param(
        "\n".join(
            ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
            + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
        ),
        f"more than {MAX_NODES} values",
        id="alias-bomb",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SHAPES)
def test_the_offline_limits_apply_to_every_document(text: str, expected: str) -> None:
    """Depth, size and alias limits hold per document, with the fast loader too; the next document is read."""
    items = split(dump(CONFIG_MAP) + "---\n" + text + "\n---\n" + dump(CONFIG_MAP))
    assert [type(i) for i in items] == [Manifest, BadDocument, Manifest]
    bad = items[1]
    assert isinstance(bad, BadDocument) and bad.where.document == 2
    assert expected in bad.message and "INPUT" not in bad.message


def test_yaml_errors_never_quote_the_input() -> None:
    """A secret value the parser would quote (a tag, a character) is cut from the message."""
    for text in (f"stringData: {{token: !{CANARY} x}}\n", f'data: "{CANARY}\\q"\n'):
        bad = split(text)[0]
        assert isinstance(bad, BadDocument)
        assert CANARY not in bad.message and CANARY not in str(bad)
        assert "line 1" in bad.message


def test_the_fast_loader_builds_what_the_safe_loader_builds() -> None:
    """libyaml, when present, is used and gives the same objects as yaml.safe_load_all."""
    if yaml.__with_libyaml__:
        assert stream._LOADER is yaml.CSafeLoader
    text = (ROOT / "deploy" / "examples" / "acme-prod" / "worker.yaml").read_text()
    bodies = [i.body for i in split(text) if isinstance(i, Manifest)]
    assert bodies == list(yaml.safe_load_all(text))


def test_is_single_tells_one_object_from_a_stream() -> None:
    """One object or an unreadable first document: the AdmissionReview answer; more, or a List: a stream."""
    one = dump(CONFIG_MAP)
    assert stream.is_single(one, split(one))
    assert stream.is_single("", [])
    assert stream.is_single("{broken", split("{broken"))
    two = dump(CONFIG_MAP, CONFIG_MAP)
    assert not stream.is_single(two, split(two)[:2])
    listed = dump({"apiVersion": "v1", "kind": "List", "items": [CONFIG_MAP]})
    assert not stream.is_single(listed, split(listed))
    empty_list = dump({"apiVersion": "v1", "kind": "List", "items": []})
    assert not stream.is_single(empty_list, split(empty_list))


# --------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------


def test_judged_kinds_are_pods_controllers_and_secrets() -> None:
    """The kinds the webhook judges are reviewed; others, and other API groups, are counted not judged."""
    judged = [
        in_namespace(pod()),
        in_namespace(controller("Deployment", pod())),
        in_namespace(controller("CronJob", pod())),
        secret("app-config"),
    ]
    not_judged = [
        CONFIG_MAP,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-prod"}},
        {**in_namespace(controller("Deployment", pod())), "apiVersion": "extensions/v1beta1"},
        {"apiVersion": "v1", "kind": "Service"},
    ]
    outcomes = judge(split(dump(*judged, *not_judged)))
    assert all(isinstance(o, Reviewed) for o in outcomes)
    decisions = [o.decision for o in outcomes if isinstance(o, Reviewed)]
    assert decisions == ["allowed"] * 4 + [stream.NOT_JUDGED] * 4


def test_a_denied_template_names_its_field_path() -> None:
    """A Deployment reading the dev Secret is denied; the finding line names kind, object and field path."""
    outcome = judge(split(dump(DEV_SECRET_READER)))[0]
    assert isinstance(outcome, Reviewed) and outcome.decision == "denied"
    assert stream.finding_lines(outcome.record) == [
        f"Deployment acme-prod/old-worker: [{c.RULE_DEV_SECRET_REFERENCE}] references forbidden Secret "
        f"{DEV_SECRET} at spec.template.spec.containers[0].envFrom[0].secretRef.name"
    ]


def test_the_dev_secret_itself_is_denied() -> None:
    """The dev Secret in a Vault namespace is denied by dev-secret-object, its keys and values in no record;
    in a dev-store namespace it is admitted."""
    outcome = judge(split(dump(secret())))[0]
    assert isinstance(outcome, Reviewed) and outcome.decision == "denied"
    assert outcome.record["rules"] == [c.RULE_DEV_SECRET_OBJECT]
    assert CANARY not in json.dumps(outcome.record) and "TELEGRAM_TOKEN" not in json.dumps(outcome.record)
    elsewhere = judge(split(dump(secret(namespace="acme-dev"))))[0]
    assert isinstance(elsewhere, Reviewed) and elsewhere.decision == "allowed"


def test_records_have_the_audit_fields_and_where_the_object_is() -> None:
    """Judged and not-judged records carry the same fields: the audit line's, plus source and position."""
    outcomes = judge(split(dump(CONFIG_MAP, DEV_SECRET_READER), "rendered.yaml"))
    records = [o.record for o in outcomes if isinstance(o, Reviewed)]
    assert set(records[0]) == set(records[1])
    assert {"source", "document", "line", "item"} <= set(records[0])
    assert records[1]["source"] == "rendered.yaml" and records[1]["document"] == 2
    assert records[1]["endpoint"] == "offline" and records[1]["operation"] == "CREATE"


def test_a_judged_kind_without_namespace_needs_the_flag() -> None:
    """No metadata.namespace and no --namespace: bad input (kubectl's namespace is unknown offline)."""
    bare = controller("Deployment", pod())
    bad = judge(split(dump(bare)))[0]
    assert isinstance(bad, BadDocument)
    assert bad.message == "a Deployment without metadata.namespace: pass --namespace NS"
    flagged = judge(split(dump(bare)), namespace="acme-prod")[0]
    assert isinstance(flagged, Reviewed) and flagged.record["namespace"] == "acme-prod"
    unjudged = judge(split(dump({"apiVersion": "v1", "kind": "ConfigMap"})))[0]
    assert isinstance(unjudged, Reviewed) and unjudged.decision == stream.NOT_JUDGED


def test_namespace_flag_and_metadata_must_agree() -> None:
    """--namespace different from metadata.namespace is bad input, as kubectl apply -n refuses it."""
    bad = judge(split(dump(in_namespace(pod(), "acme-dev"))), namespace="acme-prod")[0]
    assert isinstance(bad, BadDocument)
    assert bad.message == "--namespace acme-prod does not match metadata.namespace acme-dev"


def test_no_kind_is_bad_input() -> None:
    """An object without apiVersion or kind (a values file, a config) is not a Kubernetes object."""
    bad = judge(split("replicas: 3\n"))[0]
    assert isinstance(bad, BadDocument) and "apiVersion and kind must be set" in bad.message


def test_an_admission_review_in_a_stream_is_judged_as_it_says() -> None:
    """A recorded AdmissionReview is judged with its own operation and namespace."""
    outcome = judge(split(dump(review(pod(serviceAccountName="app-sa")))))[0]
    assert isinstance(outcome, Reviewed) and outcome.decision == "denied"
    assert outcome.record["rules"] == [c.RULE_WORKER_SERVICE_ACCOUNT]


def test_an_unexpected_error_keeps_only_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while judging one object is a Failed with the exception type, never its message."""

    def explode(*_: object, **__: object) -> object:
        raise RuntimeError(CANARY)

    monkeypatch.setattr(stream, "review_document", explode)
    outcomes = judge(split(dump(in_namespace(pod()), CONFIG_MAP)))
    assert outcomes[0] == Failed(Where("in.yaml", 1, 1), "RuntimeError")
    assert isinstance(outcomes[1], Reviewed)


def test_tally_counts_and_summary_line() -> None:
    """The summary counts each object once: judged (admitted, warned, denied), not judged, not reviewed."""
    warned = in_namespace(
        pod(containers=[container(envFrom=[{"secretRef": {"name": DEV_SECRET}}])]), "acme-stage"
    )
    items = split(dump(in_namespace(pod()), warned, DEV_SECRET_READER, CONFIG_MAP, "oops"))
    tally = stream.Tally()
    for outcome in judge(items):
        tally.add(outcome)
    tally.add(Failed(Where("x"), "RuntimeError"))
    assert tally.line() == (
        "4 objects: 3 judged (1 admitted, 1 warned, 1 denied), 1 not judged; "
        "1 not reviewed (bad input); 1 not reviewed (internal error)"
    )


# --------------------------------------------------------------------------------------------
# Property: splitting by lines finds what the YAML parser finds
# --------------------------------------------------------------------------------------------

# Text with what could confuse a line-based split: separators, comments, quotes, newlines.
TRICKY_TEXT = st.lists(
    st.sampled_from([*"ab -#:'\"\n\t", "---", "\n---\n", "\n--- #x\n", "..."]), max_size=8
).map("".join)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3),
    max_leaves=10,
)
OBJECTS = st.builds(
    lambda kind, data: {"apiVersion": "v1", "kind": kind, "data": data},
    st.sampled_from(["ConfigMap", "Service", "Namespace"]),
    st.dictionaries(TRICKY_TEXT, VALUES, max_size=4),
)


@given(
    objects=st.lists(OBJECTS, min_size=1, max_size=5),
    style=st.sampled_from([None, "|", "'", '"']),
    explicit_start=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_split_finds_the_documents_the_parser_finds(
    objects: list[dict[str, Any]], style: str | None, explicit_start: bool
) -> None:
    """Any stream PyYAML writes (any scalar style) splits into the same objects, numbered 1..n."""
    text = yaml.safe_dump_all(objects, default_style=style, explicit_start=explicit_start)
    items = split(text)
    assert all(isinstance(item, Manifest) for item in items)
    assert [item.body for item in items if isinstance(item, Manifest)] == objects
    assert [item.where.document for item in items] == list(range(1, len(objects) + 1))
