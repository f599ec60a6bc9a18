"""``secret://`` references: parsing and scope checks, pure (no I/O).

Two forms:

- ``secret://<category>/<name>``: in the worker's own scope (its env, tenant and team);
- ``secret://<env>/<tenant>/<team>/<category>/<name>``: the long form, accepted only inside the worker's
  env AND tenant, and only in its own team or the tenant's shared team (``GREENTIC_SHARED_TEAM``, default
  ``default``): reaching the shared team's secrets is what the long form is for. The boundary is Vault's
  per-team policy (``gtc-secrets bootstrap --team``); this check only turns a reference Vault would refuse
  into a clear error before any I/O.

Every segment must match a strict ASCII grammar, checked before any I/O, so that nothing can leave the
scope: no empty segments, no ``.``/``..``, no percent-escapes, backslashes, control characters, query or
fragment, no non-ASCII (which also refuses Unicode look-alikes such as a Cyrillic dze for ``s`` or fullwidth
letters), no upper case (one spelling per secret), and bounded lengths. Errors name the reference (escaped
and shortened), never a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gtc_secrets.constants import DEFAULT_SHARED_TEAM, REFERENCE_SCHEME

# env / tenant / team: RFC 1123 labels, as the webhook's namespace bindings and Vault role names need.
SCOPE_SEGMENT = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# category / name: a little wider (underscores and dots are common in secret names), but the first
# character is alphanumeric, which already rules out ".", ".." and hidden-file style names.
NAME_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_SCOPE_SEGMENT = 63
MAX_CATEGORY = 63
MAX_NAME = 128
# Longest valid reference, plus the scheme: refuse anything longer before looking at it further.
MAX_REFERENCE = len(REFERENCE_SCHEME) + 3 * MAX_SCOPE_SEGMENT + MAX_CATEGORY + MAX_NAME + 4
_SHOWN = 96


class InvalidReference(ValueError):
    """A reference is malformed or outside the worker's scope; the message names the reference."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid secret reference {display(reference)}: {reason}")


def display(text: str) -> str:
    """An escaped, shortened rendering of a reference for messages (control characters made visible)."""
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    return ascii(shown)


@dataclass(frozen=True)
class Scope:
    """Who the worker is: its env, tenant and team (from GREENTIC_ENV/TENANT/TEAM), and the tenant's shared
    team it may read too (GREENTIC_SHARED_TEAM)."""

    env: str
    tenant: str
    team: str
    shared_team: str = DEFAULT_SHARED_TEAM


@dataclass(frozen=True, order=True)
class SecretRef:
    """A fully qualified, validated reference."""

    env: str
    tenant: str
    team: str
    category: str
    name: str

    @property
    def logical_path(self) -> str:
        """``<env>/<tenant>/<team>/<category>/<name>``: the dev-store key, the KV sub-path, the AAD."""
        return f"{self.env}/{self.tenant}/{self.team}/{self.category}/{self.name}"

    @property
    def uri(self) -> str:
        return f"{REFERENCE_SCHEME}{self.logical_path}"

    def __str__(self) -> str:
        return self.uri


def is_reference(value: str) -> bool:
    """True for anything that is meant as a reference, including near misses (``SECRET://``,
    ``secret:/x``, leading blanks): those must fail to parse rather than pass through unresolved."""
    return value.lstrip().lower().startswith("secret:")


def check_scope_segment(value: str, what: str) -> str:
    """Validate one env/tenant/team value (also used for settings and CLI flags)."""
    if not value:
        raise ValueError(f"{what} is empty")
    if len(value) > MAX_SCOPE_SEGMENT or not SCOPE_SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} {display(value)} is not a lower-case RFC 1123 label "
            f"([a-z0-9-], at most {MAX_SCOPE_SEGMENT} characters)"
        )
    return value


def _characters(reference: str, rest: str) -> None:
    for ch in rest:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            raise InvalidReference(reference, "contains a control character")
        if code > 0x7E:
            raise InvalidReference(reference, "contains a non-ASCII character (look-alikes are refused)")
    for ch, reason in (
        ("%", "percent-escapes are not allowed"),
        ("\\", "backslashes are not allowed"),
        ("?", "a query is not allowed"),
        ("#", "a fragment is not allowed"),
    ):
        if ch in rest:
            raise InvalidReference(reference, reason)


def _segment(reference: str, value: str, what: str, pattern: re.Pattern[str], limit: int) -> str:
    if len(value) > limit:
        raise InvalidReference(reference, f"{what} is longer than {limit} characters")
    if not pattern.fullmatch(value):
        rule = "[a-z0-9-]" if pattern is SCOPE_SEGMENT else "[a-z0-9._-], starting with a letter or digit"
        raise InvalidReference(reference, f"{what} {display(value)} must be lower-case {rule}")
    return value


def _split(reference: str) -> list[str]:
    if len(reference) > MAX_REFERENCE:
        raise InvalidReference(reference, f"longer than {MAX_REFERENCE} characters")
    if not reference.startswith(REFERENCE_SCHEME):
        raise InvalidReference(reference, f"must start with {REFERENCE_SCHEME}")
    rest = reference[len(REFERENCE_SCHEME) :]
    _characters(reference, rest)
    parts = rest.split("/")
    for part in parts:
        if part in (".", ".."):
            raise InvalidReference(reference, f"path segment {part!r} is not allowed")
    if any(part == "" for part in parts):
        raise InvalidReference(reference, "empty path segment")
    if len(parts) not in (2, 5):
        raise InvalidReference(
            reference,
            f"expected {REFERENCE_SCHEME}<category>/<name> or "
            f"{REFERENCE_SCHEME}<env>/<tenant>/<team>/<category>/<name>, got {len(parts)} segments",
        )
    return parts


def _ref(reference: str, parts: list[str]) -> SecretRef:
    env, tenant, team, category, name = parts
    return SecretRef(
        env=_segment(reference, env, "env", SCOPE_SEGMENT, MAX_SCOPE_SEGMENT),
        tenant=_segment(reference, tenant, "tenant", SCOPE_SEGMENT, MAX_SCOPE_SEGMENT),
        team=_segment(reference, team, "team", SCOPE_SEGMENT, MAX_SCOPE_SEGMENT),
        category=_segment(reference, category, "category", NAME_SEGMENT, MAX_CATEGORY),
        name=_segment(reference, name, "name", NAME_SEGMENT, MAX_NAME),
    )


def parse_reference(reference: str, scope: Scope) -> SecretRef:
    """Parse a reference as a worker of ``scope`` may use it: the short form, or the long form in its env and
    tenant and in its own or the shared team."""
    parts = _split(reference)
    if len(parts) == 2:
        return _ref(reference, [scope.env, scope.tenant, scope.team, *parts])
    ref = _ref(reference, parts)
    if ref.env != scope.env:
        raise InvalidReference(reference, f"env {ref.env!r} is outside the worker's env {scope.env!r}")
    if ref.tenant != scope.tenant:
        raise InvalidReference(
            reference, f"tenant {ref.tenant!r} is outside the worker's tenant {scope.tenant!r}"
        )
    if ref.team not in (scope.team, scope.shared_team):
        raise InvalidReference(
            reference,
            f"team {ref.team!r} is outside the worker's team {scope.team!r} and the shared team "
            f"{scope.shared_team!r} (Vault's per-team policy would refuse it)",
        )
    return ref


def parse_long_reference(reference: str) -> SecretRef:
    """Parse a long-form reference with no worker scope (operator side: ``put``)."""
    parts = _split(reference)
    if len(parts) != 5:
        raise InvalidReference(
            reference,
            f"the short form needs an env, tenant and team; use {REFERENCE_SCHEME}<env>/<tenant>/...",
        )
    return _ref(reference, parts)
