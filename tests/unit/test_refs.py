"""secret:// references: grammar, scope, and a table of hostile inputs refused before any I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gtc_secrets.refs import (
    MAX_NAME,
    MAX_REFERENCE,
    InvalidReference,
    Scope,
    SecretRef,
    check_scope_segment,
    is_reference,
    parse_long_reference,
    parse_reference,
)

SCOPE = Scope(env="prod", tenant="acme", team="core")


def test_short_form_resolves_in_the_workers_own_scope() -> None:
    """secret://<category>/<name> takes env, tenant and team from the worker."""
    ref = parse_reference("secret://llm/openai_key", SCOPE)
    assert ref == SecretRef("prod", "acme", "core", "llm", "openai_key")
    assert ref.logical_path == "prod/acme/core/llm/openai_key"
    assert str(ref) == ref.uri == "secret://prod/acme/core/llm/openai_key"


def test_long_form_in_own_scope() -> None:
    """The long form naming the worker's own env/tenant/team is the same reference as the short form."""
    assert parse_reference("secret://prod/acme/core/llm/openai_key", SCOPE) == parse_reference(
        "secret://llm/openai_key", SCOPE
    )


def test_long_form_may_name_the_shared_team_of_the_tenant() -> None:
    """The tenant's shared team (default: ``default``) is what the long form is for."""
    ref = parse_reference("secret://prod/acme/default/telegram/bot.token", SCOPE)
    assert ref.team == "default"
    shared = Scope(env="prod", tenant="acme", team="core", shared_team="common")
    assert parse_reference("secret://prod/acme/common/telegram/bot.token", shared).team == "common"


@pytest.mark.parametrize(
    ("reference", "scope"),
    [
        ("secret://prod/acme/billing/llm/key", SCOPE),
        # With another shared team, "default" is just another team.
        ("secret://prod/acme/default/llm/key", Scope("prod", "acme", "core", shared_team="common")),
    ],
)
def test_long_form_in_another_team_is_refused_naming_both_allowed_teams(reference: str, scope: Scope) -> None:
    """Only the worker's own team and the shared team: Vault's per-team policy refuses the others."""
    with pytest.raises(InvalidReference) as caught:
        parse_reference(reference, scope)
    message = str(caught.value)
    assert f"outside the worker's team 'core' and the shared team {scope.shared_team!r}" in message
    assert reference in message


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("secret://dev/acme/core/llm/key", "outside the worker's env"),
        ("secret://prod/globex/core/llm/key", "outside the worker's tenant"),
        ("secret://staging/globex/core/llm/key", "outside the worker's env"),
    ],
)
def test_long_form_outside_env_or_tenant_is_refused(reference: str, reason: str) -> None:
    """Another env or tenant is out of scope, whatever Vault would say."""
    with pytest.raises(InvalidReference, match=reason):
        parse_reference(reference, SCOPE)


HOSTILE = [
    ("", "must start with secret://"),
    ("llm/key", "must start with secret://"),
    ("SECRET://llm/key", "must start with secret://"),
    ("secret:/llm/key", "must start with secret://"),
    (" secret://llm/key", "must start with secret://"),
    ("secrets://llm/key", "must start with secret://"),
    ("secret://", "empty path segment"),
    ("secret://llm/", "empty path segment"),
    ("secret:///key", "empty path segment"),
    ("secret://llm//key", "empty path segment"),
    ("secret://prod/acme//llm/key", "empty path segment"),
    ("secret://llm/key/", "empty path segment"),
    ("secret://./key", "segment '.'"),
    ("secret://llm/..", "segment '..'"),
    ("secret://../../other/core/llm/key", "segment '..'"),
    ("secret://prod/acme/core/../../globex/core/key", "segment '..'"),
    ("secret://prod/acme/../globex/llm/key", "segment '..'"),
    ("secret://llm/%2e%2e", "percent-escapes"),
    ("secret://%2e%2e/%2e%2e", "percent-escapes"),
    ("secret://llm/key%00", "percent-escapes"),
    ("secret://llm/ke%79", "percent-escapes"),
    ("secret://llm\\..\\key", "backslashes"),
    ("secret://llm/key\x00", "control character"),
    ("secret://llm/key\n", "control character"),
    ("secret://llm/\tkey", "control character"),
    ("secret://llm/key\x7f", "control character"),
    ("secret://llm/\u0455ecret", "non-ASCII"),  # Cyrillic dze, looks like "s"
    ("secret://llm/\uff4bey", "non-ASCII"),  # fullwidth "k"
    ("secret://llm/k\u200bey", "non-ASCII"),  # zero-width space
    ("secret://llm/key\u2215x", "non-ASCII"),  # division slash, looks like "/"
    ("secret://llm/caf\u00e9", "non-ASCII"),
    ("secret://llm/key?version=1", "a query"),
    ("secret://llm/key#frag", "a fragment"),
    ("secret://llm/Key", "must be lower-case"),
    ("secret://LLM/key", "must be lower-case"),
    ("secret://llm/.hidden", "must be lower-case"),
    ("secret://llm/-dash", "must be lower-case"),
    ("secret://llm/key with space", "must be lower-case"),
    ("secret://llm/key:1", "must be lower-case"),
    ("secret://llm/*", "must be lower-case"),
    ("secret://prod/acme/co_re/llm/key", "team 'co_re' must be lower-case"),
    ("secret://prod/acme/core-/llm/key", "team 'core-' must be lower-case"),
    ("secret://key", "got 1 segments"),
    ("secret://a/b/c", "got 3 segments"),
    ("secret://a/b/c/d", "got 4 segments"),
    ("secret://a/b/c/d/e/f", "got 6 segments"),
    ("secret://llm/" + "k" * (MAX_NAME + 1), "name is longer than 128"),
    ("secret://" + "c" * 64 + "/key", "category is longer than 63"),
    ("secret://prod/" + "t" * 64 + "/core/llm/key", "tenant is longer than 63"),
    ("secret://llm/" + "k" * 10_000, f"longer than {MAX_REFERENCE}"),
]


@pytest.mark.parametrize(("reference", "reason"), HOSTILE, ids=[repr(r[0])[:40] for r in HOSTILE])
def test_hostile_references_are_refused(reference: str, reason: str) -> None:
    """Traversal, escapes, look-alikes, control characters and oversize input never parse."""
    with pytest.raises(InvalidReference) as info:
        parse_reference(reference, SCOPE)
    assert reason in info.value.reason or reason in str(info.value)


def test_error_message_names_the_reference_escaped_and_shortened() -> None:
    """Control characters are made visible and a huge reference is cut, so stderr stays readable."""
    with pytest.raises(InvalidReference) as info:
        parse_reference("secret://llm/key\x00\x1b[2J", SCOPE)
    assert "\\x00" in str(info.value)
    assert "\x1b" not in str(info.value)
    with pytest.raises(InvalidReference) as info:
        parse_reference("secret://llm/" + "k" * 10_000, SCOPE)
    assert len(str(info.value)) < 300


def test_long_reference_without_scope_for_put() -> None:
    """The operator side needs a full reference: the short form is refused without a scope."""
    assert parse_long_reference("secret://prod/acme/core/llm/key").tenant == "acme"
    with pytest.raises(InvalidReference, match="short form needs"):
        parse_long_reference("secret://llm/key")
    with pytest.raises(InvalidReference, match=r"segment '\.\.'"):
        parse_long_reference("secret://prod/../core/llm/key")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("secret://llm/key", True),
        ("SECRET://llm/key", True),
        ("  secret:/llm/key", True),
        ("Secret:llm", True),
        ("https://example.com", False),
        ("secretary", False),
        ("", False),
        ("my secret://x", False),
    ],
)
def test_is_reference_catches_near_misses(value: str, expected: bool) -> None:
    """Near misses count as references so that they fail instead of passing through unresolved."""
    assert is_reference(value) is expected


@pytest.mark.parametrize("value", ["prod", "a", "a-b", "team-1", "x" * 63])
def test_scope_segment_accepts_labels(value: str) -> None:
    """env/tenant/team values are RFC 1123 labels."""
    assert check_scope_segment(value, "GREENTIC_ENV") == value


@pytest.mark.parametrize("value", ["", "Prod", "-a", "a-", "a_b", "a.b", "x" * 64, "\u0430cme"])
def test_scope_segment_refuses_non_labels(value: str) -> None:
    """Anything else is refused, naming the variable."""
    with pytest.raises(ValueError, match="GREENTIC_TENANT"):
        check_scope_segment(value, "GREENTIC_TENANT")


_SEGMENT = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,20}\Z")


@given(category=_SEGMENT, name=_SEGMENT)
def test_valid_short_references_round_trip(category: str, name: str) -> None:
    """Any grammar-valid short reference parses to a long form that parses back to itself."""
    ref = parse_reference(f"secret://{category}/{name}", SCOPE)
    assert parse_long_reference(ref.uri) == ref
    assert ".." not in ref.logical_path.split("/")


@given(text=st.text(max_size=80))
def test_anything_that_parses_stays_in_scope(text: str) -> None:
    """Whatever the input, a parsed reference is in the worker's env and tenant, in its own or the shared
    team, and has 5 clean segments."""
    try:
        ref = parse_reference("secret://" + text, SCOPE)
    except InvalidReference:
        return
    assert (ref.env, ref.tenant) == ("prod", "acme")
    assert ref.team in ("core", "default")
    assert ref.logical_path.isascii()
    assert all(part and part not in (".", "..") for part in ref.logical_path.split("/"))
    assert len(ref.logical_path.split("/")) == 5
