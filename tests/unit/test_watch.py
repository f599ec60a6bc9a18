"""``exec --watch``'s Vault side: version checks against the in-memory fake Vault of test_resolve.py.

The fake speaks KV-v2's metadata endpoint as OpenBao does (``current_version``, ``versions`` with
``deletion_time``); tests/integration/test_watch.py runs the same against a real OpenBao. Time is never
measured: the watcher's ``sleep`` is a script that records each delay and changes Vault between checks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gtc_secrets.envelope import SecretValue
from gtc_secrets.refs import SecretRef
from gtc_secrets.vault import Forbidden, KvVersion, NotFound, Response, VaultSealed, VaultUnavailable
from gtc_secrets.watch import (
    JITTER_FRACTION,
    MAX_BACKOFF_SECONDS,
    VaultWatcher,
    describe_changes,
    judge,
    next_delay,
)
from tests.unit.test_resolve import CANARY, PATHS, FakeVault, client, ref

INTERVAL = 30.0


class Script:
    """The watcher's ``sleep``: records each delay, runs the next step (a change to Vault), and ends the
    watch (raises Done) when the steps run out."""

    class Done(Exception):
        pass

    def __init__(self, *steps: Callable[[], object]) -> None:
        self.steps = list(steps)
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if not self.steps:
            raise Script.Done
        self.steps.pop(0)()


def values_of(values: Mapping[SecretRef, SecretValue]) -> dict[str, str]:
    return {r.name: v.reveal_text(r.uri) for r, v in values.items()}


async def run(watcher: VaultWatcher, script: Script) -> list[dict[str, str]]:
    """Every value set the watcher yields until the script ends."""
    yielded: list[dict[str, str]] = []
    with pytest.raises(Script.Done):
        async for new in watcher.changes(values_of):
            yielded.append(new)
    return yielded


def nothing() -> None:
    """A step in which nothing changes."""


@pytest.fixture
def fake() -> FakeVault:
    vault = FakeVault()
    vault.seed(ref("a"), f"{CANARY}-a1")
    vault.seed(ref("b"), f"{CANARY}-b1")
    return vault


def watcher(fake: FakeVault, token_file: Path, script: Script) -> VaultWatcher:
    return VaultWatcher(
        client(fake, token_file), [ref("a"), ref("b")], interval=INTERVAL, rng=random.Random(7), sleep=script
    )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="gtc_secrets")
    yield caplog
    assert CANARY not in caplog.text


# ---------------------------------------------------------------------------------------------
# Pure parts.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_next_delay_is_the_interval_jittered_then_doubling_up_to_the_cap(seed: int) -> None:
    """No failure: the interval +/- 10 %; each failed check doubles it, up to 5 minutes."""
    rng = random.Random(seed)
    low, high = 1 - JITTER_FRACTION, 1 + JITTER_FRACTION
    assert 30 * low <= next_delay(30, 0, rng) <= 30 * high
    assert 60 * low <= next_delay(30, 1, rng) <= 60 * high
    assert 240 * low <= next_delay(30, 3, rng) <= 240 * high
    assert MAX_BACKOFF_SECONDS * low <= next_delay(30, 4, rng) <= MAX_BACKOFF_SECONDS * high
    assert MAX_BACKOFF_SECONDS * low <= next_delay(30, 10_000, rng) <= MAX_BACKOFF_SECONDS * high
    # An interval above the cap is never shortened by a failure.
    assert 600 * low <= next_delay(600, 3, rng) <= 600 * high


def test_next_delay_jitter_spreads_workers() -> None:
    """Workers started together do not keep checking in the same second."""
    delays = {round(next_delay(60, 0, random.Random(seed)), 3) for seed in range(50)}
    assert len(delays) > 40


def test_judge_names_changes_unreadable_references_and_an_unavailable_vault() -> None:
    """Any other version is a change (a lower one too: metadata deleted, then put again); errors are
    kept per reference, and Vault not answering fails the whole check."""
    a, b, c, d, e = ref("a"), ref("b"), ref("c"), ref("d"), ref("e")
    v = {n: KvVersion(n, f"t{n}") for n in range(1, 7)}
    seen = {a: v[1], b: v[3], c: v[2], d: v[5], e: v[1]}
    gone = NotFound("GET", "secret/metadata/greentic/prod/acme/core/llm/c", 404)
    rewritten = KvVersion(1, "t9")
    verdict = judge(seen, {a: v[1], b: v[1], c: gone, d: v[6], e: rewritten})
    assert verdict.changed == {b: (v[3], v[1]), d: (v[5], v[6]), e: (v[1], rewritten)}
    assert verdict.unreadable == {c: gone}
    assert verdict.unavailable is None
    down = VaultSealed("GET", "secret/metadata/x", 503)
    verdict = judge(seen, {a: v[2], b: down})
    assert verdict.unavailable is down
    assert judge(seen, {a: v[1], b: v[3]}).changed == {}


def test_describe_changes_gives_names_and_versions_only() -> None:
    text = describe_changes(
        {ref("b"): (KvVersion(1, "t1"), KvVersion(2, "t2")), ref("a"): (None, KvVersion(7))}
    )
    assert text == (
        "secret://prod/acme/core/llm/a (version - -> 7), secret://prod/acme/core/llm/b (version 1 -> 2)"
    )


def test_a_watch_interval_must_be_positive(fake: FakeVault, token_file: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        VaultWatcher(client(fake, token_file), [ref("a")], interval=0)


# ---------------------------------------------------------------------------------------------
# Against the fake Vault.
# ---------------------------------------------------------------------------------------------


async def test_boot_resolves_and_keeps_the_versions_read(fake: FakeVault, token_file: Path) -> None:
    """The boot reads envelopes as exec does, and the versions come from those reads."""
    fake.seed(ref("b"), f"{CANARY}-b2")
    w = watcher(fake, token_file, Script())
    values = await w.boot(timeout=5)
    assert values_of(values) == {"a": f"{CANARY}-a1", "b": f"{CANARY}-b2"}
    assert {r.name: v.number for r, v in w.versions.items()} == {"a": 1, "b": 2}
    assert fake.count("GET", "secret/metadata/") == 0


async def test_unchanged_secrets_never_yield_and_cost_one_metadata_read_each(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Three quiet checks: one metadata read per reference each, no envelope read, no decrypt."""
    script = Script(nothing, nothing, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    reads, decrypts = fake.count("GET", "secret/data/"), fake.count("POST", "transit/")
    assert await run(w, script) == []
    assert w.checks == 3
    assert fake.count("GET", "secret/metadata/") == 6
    assert (fake.count("GET", "secret/data/"), fake.count("POST", "transit/")) == (reads, decrypts)
    assert all(INTERVAL * 0.9 <= d <= INTERVAL * 1.1 for d in script.delays)


async def test_a_new_version_yields_every_value_again_exactly_once(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A put between two checks: the next check resolves everything again and yields once; the checks
    after it see nothing new. The log names the reference and both versions."""
    script = Script(lambda: fake.seed(ref("a"), f"{CANARY}-a2"), nothing, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == [{"a": f"{CANARY}-a2", "b": f"{CANARY}-b1"}]
    assert {r.name: v.number for r, v in w.versions.items()} == {"a": 2, "b": 1}
    assert fake.count("POST", "transit/") == 2  # boot, then the one resolution after the change
    assert "secret://prod/acme/core/llm/a (version 1 -> 2)" in logs.text


async def test_metadata_deleted_and_put_again_is_a_change(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """`kv metadata delete` then a put: the numbers start at 1 again, so version 1 of the new secret is
    told apart from version 1 of the old one by when it was written."""

    def recreate() -> None:
        path = fake.kv_path(ref("b"))
        del fake.kv[path], fake.kv_versions[path]
        fake.seed(ref("b"), f"{CANARY}-b-new")

    script = Script(recreate, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert w.versions[ref("b")].number == 1
    assert await run(w, script) == [{"a": f"{CANARY}-a1", "b": f"{CANARY}-b-new"}]
    assert w.versions[ref("b")].number == 1
    assert "secret://prod/acme/core/llm/b (version 1 -> 1, deleted and written again)" in logs.text


async def test_vault_unavailable_keeps_the_child_backs_off_then_picks_up_the_change(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Sealed for two checks (and a put meanwhile): nothing yielded, the waits double, a warning each
    time; once Vault answers, the change is picked up."""

    def sealed() -> None:
        fake.fail_next = [503, 503]  # the two metadata reads of the next check

    def sealed_after_put() -> None:
        fake.seed(ref("b"), f"{CANARY}-b2")
        sealed()

    script = Script(sealed, sealed_after_put, nothing, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == [{"a": f"{CANARY}-a1", "b": f"{CANARY}-b2"}]
    # delays: before check 1, after 1 failure, after 2 failures, after a good check, after the last
    assert INTERVAL * 1.8 <= script.delays[1] <= INTERVAL * 2.2
    assert INTERVAL * 3.6 <= script.delays[2] <= INTERVAL * 4.4
    assert INTERVAL * 0.9 <= script.delays[3] <= INTERVAL * 1.1
    warnings = [r for r in logs.records if r.levelno == logging.WARNING and "Vault unavailable" in r.message]
    assert len(warnings) == 2
    assert "keeps running" in warnings[0].message


async def test_vault_unreachable_during_the_resolution_after_a_change_is_retried(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """The metadata reads answer, then Vault goes away before the envelopes are read: nothing yielded,
    the versions stay as they were, and the next check resolves again."""
    failed_reads: list[str] = []
    route = fake._route

    def unreachable_for_two_envelope_reads(
        method: str, path: str, token: str | None, payload: Mapping[str, Any]
    ) -> Response:
        if path.startswith("secret/data/") and len(failed_reads) < 2:
            failed_reads.append(path)
            raise VaultUnavailable(method, path, None, "ConnectionRefusedError: connection refused")
        return route(method, path, token, payload)

    def put_then_break_vault() -> None:
        fake.seed(ref("a"), f"{CANARY}-a2")
        fake._route = unreachable_for_two_envelope_reads  # type: ignore[method-assign]

    script = Script(put_then_break_vault, nothing, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == [{"a": f"{CANARY}-a2", "b": f"{CANARY}-b1"}]
    assert len(failed_reads) == 2
    assert INTERVAL * 1.8 <= script.delays[1] <= INTERVAL * 2.2  # backed off after the failure
    assert "Vault unavailable" in logs.text


async def test_deleted_or_forbidden_after_boot_logs_an_error_at_each_check_and_keeps_the_child(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """The latest version soft-deleted, then the whole secret gone: an error naming it at every check,
    nothing yielded (a change to the other reference is not applied without every value)."""

    def soft_delete() -> None:
        fake.kv_deleted.add(fake.kv_path(ref("a")))

    def destroy_and_change_b() -> None:
        del fake.kv[fake.kv_path(ref("a"))]
        fake.seed(ref("b"), f"{CANARY}-b2")

    script = Script(soft_delete, destroy_and_change_b, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == []
    errors = [r.message for r in logs.records if r.levelno == logging.ERROR]
    about_a = [m for m in errors if m.startswith("secret://prod/acme/core/llm/a: cannot check")]
    assert len(about_a) == 3
    assert "deleted or destroyed" in about_a[0]
    assert "404" in about_a[1]
    assert any("not applied: secret://prod/acme/core/llm/b (version 1 -> 2)" in m for m in errors)
    assert {r.name: v.number for r, v in w.versions.items()} == {"a": 1, "b": 1}


async def test_metadata_forbidden_names_the_policy_that_is_missing(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A tenant-wide role without read on metadata paths: each reference's error says what to grant."""
    fake.metadata_readable = False
    script = Script(nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == []
    errors = [r.message for r in logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all("403 permission denied" in m and "read on the KV metadata path" in m for m in errors)
    assert fake.login_jwts == ["jwt-acme", "jwt-acme"]  # one fresh login after the first 403, no more


async def test_a_new_version_that_does_not_open_is_not_applied_and_logged_each_check(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A raw KV write (not an envelope) as the new version: an error each check, the old values stay;
    a good put afterwards is applied."""

    def raw_write() -> None:
        path = fake.kv_path(ref("a"))
        fake.kv[path] = {"value": CANARY}
        fake.kv_versions[path] += 1

    script = Script(raw_write, nothing, lambda: fake.seed(ref("a"), f"{CANARY}-a3"), nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == [{"a": f"{CANARY}-a3", "b": f"{CANARY}-b1"}]
    not_applied = [r.message for r in logs.records if "not applied" in r.message]
    assert len(not_applied) == 2
    assert "gtc-secrets put" in not_applied[0]  # the envelope error says how to re-seed it


async def test_values_the_caller_cannot_use_are_not_applied_and_tried_again(
    fake: FakeVault, token_file: Path, logs: pytest.LogCaptureFixture
) -> None:
    """``build`` refusing the new values (ValueError) leaves the versions as they were: the next check
    tries again rather than forgetting the change."""
    script = Script(lambda: fake.seed(ref("a"), f"{CANARY}-a2"), nothing, nothing)
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    attempts: list[int] = []

    def picky(values: Mapping[SecretRef, SecretValue]) -> dict[str, str]:
        attempts.append(len(values))
        if len(attempts) == 1:
            raise ValueError("OPENAI_API_KEY=secret://llm/a: the value is not UTF-8 text")
        return values_of(values)

    yielded: list[dict[str, str]] = []
    with pytest.raises(Script.Done):
        async for new in w.changes(picky):
            yielded.append(new)
    assert attempts == [2, 2]
    assert yielded == [{"a": f"{CANARY}-a2", "b": f"{CANARY}-b1"}]
    assert "OPENAI_API_KEY=secret://llm/a: the value is not UTF-8 text" in logs.text
    assert w.versions[ref("a")].number == 2


async def test_an_expired_token_is_replaced_between_checks(fake: FakeVault, token_file: Path) -> None:
    """Checks run for longer than a token lives: the watcher logs in again, the checks go on."""

    def later() -> None:
        fake.now += fake.lease + 1

    script = Script(later, later, lambda: fake.seed(ref("b"), f"{CANARY}-b2"))
    w = watcher(fake, token_file, script)
    await w.boot(timeout=5)
    assert await run(w, script) == [{"a": f"{CANARY}-a1", "b": f"{CANARY}-b2"}]
    assert len(fake.login_jwts) >= 3
    assert not [r for r in fake.requests if r[1].startswith("secret/metadata/") and r[2] is None]


def test_the_metadata_path_follows_the_settings() -> None:
    assert PATHS.kv_metadata("prod/acme/core/llm/a") == "secret/metadata/greentic/prod/acme/core/llm/a"


async def test_forbidden_and_not_found_are_per_reference(fake: FakeVault, token_file: Path) -> None:
    """read_versions gives each reference its own result: one missing secret does not hide the others."""
    del fake.kv[fake.kv_path(ref("a"))]
    w = watcher(fake, token_file, Script())
    results = await w.read_versions()
    assert isinstance(results[ref("a")], NotFound)
    assert results[ref("b")] == KvVersion(1, fake.kv_created[fake.kv_path(ref("b"))])
    fake.metadata_readable = False
    assert isinstance((await w.read_versions())[ref("b")], Forbidden)
