"""JSON Patch building and the copy-on-write applier, checked against the jsonpatch library."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from gtc_admission.patch import (
    Edit,
    ListEdit,
    SetMember,
    apply_edits,
    encode_patch,
    escape_token,
    pointer,
    to_json_patch,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            ("metadata", "annotations", "greentic.ai/secrets-backend"),
            "/metadata/annotations/greentic.ai~1secrets-backend",
            id="slash",
        ),
        pytest.param(("metadata", "annotations", "a~b"), "/metadata/annotations/a~0b", id="tilde"),
        pytest.param(("x", "~/"), "/x/~0~1", id="tilde-then-slash"),
        pytest.param(("spec", "containers", 0, "env"), "/spec/containers/0/env", id="index"),
        pytest.param((), "", id="root"),
    ],
)
def test_pointer_escaping(path: tuple[str | int, ...], expected: str) -> None:
    """RFC 6901: ~ is ~0 and / is ~1, in that order."""
    assert pointer(path) == expected


def test_escape_token_is_reversible_by_jsonpatch() -> None:
    """jsonpatch resolves our escaped annotation key to the key itself."""
    document: dict[str, Any] = {"metadata": {"annotations": {}}}
    key = "greentic.ai/odd~key"
    patched = jsonpatch.apply_patch(
        document, [{"op": "add", "path": "/metadata/annotations/" + escape_token(key), "value": "v"}]
    )
    assert patched["metadata"]["annotations"] == {key: "v"}


EDIT_CASES: list[Any] = [
    pytest.param(
        {"metadata": {}},
        (SetMember(("metadata",), "annotations", {"a/b": "v"}),),
        [{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "v"}}],
        id="missing-parent-added-whole",
    ),
    pytest.param(
        {"metadata": {"annotations": {"x": "1"}}},
        (SetMember(("metadata", "annotations"), "a/b", "v"),),
        [{"op": "add", "path": "/metadata/annotations/a~1b", "value": "v"}],
        id="member-into-existing",
    ),
    pytest.param(
        {"spec": {"serviceAccountName": "default"}},
        (SetMember(("spec",), "serviceAccountName", "gtc-worker"),),
        [{"op": "add", "path": "/spec/serviceAccountName", "value": "gtc-worker"}],
        id="add-overwrites-member",
    ),
    pytest.param(
        {"spec": {"containers": [{"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}},
        (
            ListEdit(
                ("spec", "containers", 0, "env"),
                ((1, {"name": "B", "value": "3"}),),
                ({"name": "C", "value": "4"},),
            ),
        ),
        [
            {"op": "replace", "path": "/spec/containers/0/env/1", "value": {"name": "B", "value": "3"}},
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "C", "value": "4"}},
        ],
        id="replace-then-append",
    ),
    pytest.param(
        {"spec": {"containers": [{"volumeMounts": [{"name": n, "mountPath": f"/{n}"} for n in "abcd"]}]}},
        (
            ListEdit(
                ("spec", "containers", 0, "volumeMounts"),
                ((0, {"name": "t", "mountPath": "/t"}),),
                ({"name": "z", "mountPath": "/z"},),
                remove=(1, 3),
            ),
        ),
        [
            {
                "op": "replace",
                "path": "/spec/containers/0/volumeMounts/0",
                "value": {"name": "t", "mountPath": "/t"},
            },
            {"op": "remove", "path": "/spec/containers/0/volumeMounts/3"},
            {"op": "remove", "path": "/spec/containers/0/volumeMounts/1"},
            {
                "op": "add",
                "path": "/spec/containers/0/volumeMounts/-",
                "value": {"name": "z", "mountPath": "/z"},
            },
        ],
        id="replace-remove-from-the-end-then-append",
    ),
    pytest.param(
        {"spec": {"containers": [{"volumeMounts": [{"name": "a"}, {"name": "b"}]}]}},
        (ListEdit(("spec", "containers", 0, "volumeMounts"), remove=(0, 1)),),
        [
            {"op": "remove", "path": "/spec/containers/0/volumeMounts/1"},
            {"op": "remove", "path": "/spec/containers/0/volumeMounts/0"},
        ],
        id="remove-every-entry",
    ),
    pytest.param(
        {},
        (SetMember((), "metadata", {"annotations": {"k": "v"}}),),
        [{"op": "add", "path": "/metadata", "value": {"annotations": {"k": "v"}}}],
        id="missing-grandparent",
    ),
]


@pytest.mark.parametrize(("document", "edits", "expected"), EDIT_CASES)
def test_json_patch_and_view_agree_with_jsonpatch(
    document: dict[str, Any], edits: tuple[Edit, ...], expected: list[dict[str, Any]]
) -> None:
    """to_json_patch gives the expected ops; jsonpatch applying them equals our copy-on-write view."""
    original = copy.deepcopy(document)
    patch = to_json_patch(edits)
    assert patch == expected
    assert jsonpatch.apply_patch(document, patch) == apply_edits(document, edits)
    assert document == original  # neither touched the input


def test_apply_edits_copies_only_along_the_path() -> None:
    """Untouched subtrees are shared with the original; touched containers are new objects."""
    untouched = {"name": "sidecar", "env": [{"name": "X", "value": "1"}]}
    document: dict[str, Any] = {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "app", "env": []}, untouched]},
    }
    view = apply_edits(
        document, (ListEdit(("spec", "containers", 0, "env"), (), ({"name": "N", "value": "v"},)),)
    )
    assert view["spec"]["containers"][1] is untouched
    assert view["metadata"] is document["metadata"]
    assert view["spec"] is not document["spec"]
    assert document["spec"]["containers"][0]["env"] == []
    assert view["spec"]["containers"][0]["env"] == [{"name": "N", "value": "v"}]


def test_apply_edits_several_edits_share_one_copy() -> None:
    """Two edits under the same container see each other's result."""
    document: dict[str, Any] = {"spec": {"containers": [{"env": [], "volumeMounts": []}]}}
    view = apply_edits(
        document,
        (
            ListEdit(("spec", "containers", 0, "env"), (), ({"name": "A", "value": "1"},)),
            ListEdit(("spec", "containers", 0, "volumeMounts"), (), ({"name": "v", "mountPath": "/m"},)),
        ),
    )
    assert view["spec"]["containers"][0] == {
        "env": [{"name": "A", "value": "1"}],
        "volumeMounts": [{"name": "v", "mountPath": "/m"}],
    }


def test_apply_edits_missing_path_is_a_bug_not_silence() -> None:
    """An edit anchored at a parent that does not exist raises instead of inventing structure."""
    with pytest.raises(KeyError):
        apply_edits({}, (ListEdit(("spec", "volumes"), (), ({},)),))


def test_encode_patch_is_base64_json() -> None:
    """response.patch is base64 of compact UTF-8 JSON."""
    document = [{"op": "add", "path": "/a", "value": "é"}]
    assert json.loads(base64.b64decode(encode_patch(document)).decode("utf-8")) == document
