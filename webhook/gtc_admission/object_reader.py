"""Type-checked readers of the object under review, and how names taken from it are shown.

The object may be anything (it need not come from the API server), so the rules (``policy.py``) and the
worker mutation (``worker_mutation.py``) read it only through these functions: a field of the wrong type
raises ``InvalidObject`` with the field's path, which ``policy.judge`` turns into an ``invalid-object``
finding. A name taken from the object reaches a message or a warning only through ``show`` (ASCII,
shortened); a value never does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

# Kubernetes shows admission warnings to the user; keep each one short and plain ASCII.
MAX_WARNING_LENGTH: Final = 120
_NAME_IN_WARNING: Final = 24
_NAME_IN_MESSAGE: Final = 63
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]")
_NON_ASCII = re.compile(r"[^\x20-\x7e]")


class InvalidObject(Exception):
    """The object under review has the wrong shape at ``path`` (never raised for the request itself)."""

    def __init__(self, path: str, expected: str) -> None:
        super().__init__(f"{path}: expected {expected}")
        self.path = path
        self.expected = expected


def show(value: object, limit: int = _NAME_IN_MESSAGE) -> str:
    text = _UNSAFE.sub("?", value) if isinstance(value, str) and value else "?"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_warning(rule: str, text: str) -> str:
    line = _NON_ASCII.sub("?", f"{rule}: {text}")
    return line if len(line) <= MAX_WARNING_LENGTH else line[: MAX_WARNING_LENGTH - 3] + "..."


def container_name(container: Mapping[str, Any]) -> str:
    return show(container.get("name"), _NAME_IN_WARNING)


# The readers take the field path in parts and join them only for an error: paths are built for every
# entry of every container, and formatting them eagerly would dominate the cost of a decision.


def field_path(path: tuple[object, ...]) -> str:
    return "".join(str(part) for part in path)


def optional_object(value: object, *path: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidObject(field_path(path), "an object")
    return value


def required_object(value: object, *path: object) -> Mapping[str, Any]:
    """An object that must be there (the caller has seen it is not None)."""
    if not isinstance(value, dict):
        raise InvalidObject(field_path(path), "an object")
    return value


def object_list(value: object, *path: object) -> list[Mapping[str, Any]]:
    """A list of objects; missing or null is an empty list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidObject(field_path(path), "a list")
    for item in value:
        if not isinstance(item, dict):
            index = next(i for i, entry in enumerate(value) if not isinstance(entry, dict))
            raise InvalidObject(f"{field_path(path)}[{index}]", "an object")
    return value


def optional_string(value: object, *path: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidObject(field_path(path), "a string")


def metadata_of(root: Mapping[str, Any], prefix: str) -> Mapping[str, Any] | None:
    return optional_object(root.get("metadata"), prefix, "metadata")


def spec_of(root: Mapping[str, Any], prefix: str) -> Mapping[str, Any]:
    spec = optional_object(root.get("spec"), prefix, "spec")
    if spec is None:
        raise InvalidObject(f"{prefix}spec", "an object")
    return spec


def effective_service_account(spec: Mapping[str, Any], prefix: str) -> tuple[str, str | None]:
    """The ServiceAccount the pod runs as, and the deprecated alias as sent.

    As in the API server's conversion, ``serviceAccountName`` wins and the alias ``serviceAccount`` only
    counts when the name is empty.
    """
    name = optional_string(spec.get("serviceAccountName"), prefix, "spec.serviceAccountName")
    alias = optional_string(spec.get("serviceAccount"), prefix, "spec.serviceAccount")
    return name or alias or "", alias
