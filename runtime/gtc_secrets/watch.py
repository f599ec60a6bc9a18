"""``gtc-secrets exec --watch``: notice when a worker's secrets get a new version, and resolve them again.

At boot the references are resolved as without ``--watch`` (every envelope read, one transit batch),
keeping the KV-v2 version each envelope was read at. Then, every interval (with jitter), ONE KV-v2
*metadata* read per reference (``GET {kv}/metadata/{prefix}/...``, ``current_version``: no envelope,
nothing to decrypt) tells whether any has a new version. When one has, every reference is resolved again
through the boot path, and :meth:`VaultWatcher.changes` yields what the caller builds from the new values
(``cli.py``: the child's new environment, which the supervisor starts the child with).

What leaves the child untouched (the watcher yields nothing, and logs why):

- Vault unreachable, sealed or overloaded during a check or the resolution after it: a warning, and the
  next check backs off (the interval doubled per failed check, up to ``MAX_BACKOFF_SECONDS``). The
  versions seen stay as they were, so a change made meanwhile is picked up once Vault answers again.
- A reference deleted (all of it, or its latest version) or forbidden after boot: an error naming it at
  every check. Nothing is resolved while any reference cannot be read: a restart needs every value.
- A new version that does not resolve (not a valid envelope, not text): an error at every check until a
  good version replaces it.

Reference names and version numbers are logged; values never.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from gtc_secrets.envelope import EnvelopeError, SecretValue
from gtc_secrets.refs import SecretRef
from gtc_secrets.resolve import (
    DEFAULT_CONCURRENCY,
    Backoff,
    Resolved,
    ResolveError,
    resolve_versions_from_vault,
    retry_until,
)
from gtc_secrets.vault import Forbidden, KvVersion, TokenFileError, VaultError, VaultUnavailable, WorkerVault

log = logging.getLogger(__name__)
T = TypeVar("T")

# Each check waits the interval times a random factor in [1 - JITTER, 1 + JITTER]: workers rolled out
# together would otherwise ask Vault in the same second, every interval, for as long as they run.
JITTER_FRACTION: Final = 0.1
# After failed checks the wait doubles, up to this (or the interval, if longer): Vault Agent's default
# retry cap. When Vault comes back, a fleet of workers does not all ask it at once.
MAX_BACKOFF_SECONDS: Final = 300.0
_MAX_DOUBLINGS: Final = 32


def next_delay(
    interval: float,
    failures: int,
    rng: random.Random,
    *,
    max_backoff: float = MAX_BACKOFF_SECONDS,
    jitter: float = JITTER_FRACTION,
) -> float:
    """Seconds until the next check (pure): the interval, doubled per failed check in a row (up to
    ``max_backoff``, or the interval if longer), times a random factor within +/- ``jitter``."""
    base = interval
    if failures > 0:
        base = min(max(interval, max_backoff), interval * 2 ** min(failures, _MAX_DOUBLINGS))
    return base * rng.uniform(1 - jitter, 1 + jitter)


@dataclass(frozen=True)
class Verdict:
    """What one round of metadata reads says, compared with the versions the child has (pure data)."""

    changed: dict[SecretRef, tuple[KvVersion | None, KvVersion]]  # reference -> (the child's, current)
    unreadable: dict[SecretRef, Exception]  # deleted, forbidden, ...: the child keeps what it has
    unavailable: VaultUnavailable | None  # Vault did not answer: the whole check failed


def judge(seen: Mapping[SecretRef, KvVersion], current: Mapping[SecretRef, KvVersion | Exception]) -> Verdict:
    """Compare the versions read now with those the child was started with (pure).

    Any version other than the one seen is a change, a lower number or the same number written at
    another time included: deleting a secret's metadata and putting it again starts at 1 again.
    """
    changed: dict[SecretRef, tuple[KvVersion | None, KvVersion]] = {}
    unreadable: dict[SecretRef, Exception] = {}
    unavailable: VaultUnavailable | None = None
    for ref in sorted(current):
        result = current[ref]
        if isinstance(result, VaultUnavailable):
            unavailable = unavailable or result
        elif isinstance(result, Exception):
            unreadable[ref] = result
        elif result != seen.get(ref):
            changed[ref] = (seen.get(ref), result)
    return Verdict(changed=changed, unreadable=unreadable, unavailable=unavailable)


def describe_changes(changed: Mapping[SecretRef, tuple[KvVersion | None, KvVersion]]) -> str:
    """``secret://... (version 1 -> 2), ...``: names and version numbers, for the log."""
    parts: list[str] = []
    for ref, (old, new) in sorted(changed.items()):
        again = ", deleted and written again" if old is not None and old.number >= new.number else ""
        parts.append(f"{ref.uri} (version {old or '-'} -> {new}{again})")
    return ", ".join(parts)


def _unreadable_message(ref: SecretRef, error: Exception) -> str:
    hint = ""
    if isinstance(error, Forbidden) and "/metadata/" in error.path:
        # A policy written by an older bootstrap reads data paths only; today's grant metadata too.
        hint = (
            "; the worker's Vault policy must grant read on the KV metadata path "
            "(gtc-secrets bootstrap does: run it again)"
        )
    return f"{ref.uri}: cannot check for a new version ({error}){hint}; the worker keeps the value it has"


class VaultWatcher:
    """Boot resolution that remembers versions, then checks for new ones every ``interval`` seconds.

    ``vault`` is a long-lived client: its Vault token is reused between checks and replaced by a new
    login when its lease runs out or Vault answers 403 (see :class:`~gtc_secrets.vault.WorkerVault`).
    ``interval`` is not checked here (tests use short ones); the CLI refuses less than 10 s.
    """

    def __init__(
        self,
        vault: WorkerVault,
        refs: Sequence[SecretRef],
        *,
        interval: float,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError("the watch interval must be positive")
        self._vault = vault
        self._refs = sorted(set(refs))
        self._interval = interval
        self._max_backoff = max_backoff
        self._concurrency = concurrency
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._sleep = sleep
        self._seen: dict[SecretRef, KvVersion] = {}
        self.checks = 0  # rounds of metadata reads made (the benchmark divides by it)

    @property
    def versions(self) -> dict[SecretRef, KvVersion]:
        """The version of each reference the child was (last) started with."""
        return dict(self._seen)

    async def boot(self, *, timeout: float, backoff: Backoff | None = None) -> dict[SecretRef, SecretValue]:
        """Resolve every reference as ``exec`` does (retrying an unavailable Vault for ``timeout``)."""
        resolved = await retry_until(
            lambda: resolve_versions_from_vault(self._vault, self._refs, concurrency=self._concurrency),
            timeout=timeout,
            what=f"resolving {len(self._refs)} secret reference(s)",
            backoff=backoff,
        )
        self._seen = dict(resolved.versions)
        return resolved.values

    async def read_versions(self) -> dict[SecretRef, KvVersion | Exception]:
        """One metadata read per reference, all at once (bounded); each one's version or its error."""
        semaphore = asyncio.Semaphore(self._concurrency)

        async def read(ref: SecretRef) -> KvVersion:
            async with semaphore:
                return await self._vault.read_kv_version(ref.logical_path)

        results = await asyncio.gather(*(read(ref) for ref in self._refs), return_exceptions=True)
        versions: dict[SecretRef, KvVersion | Exception] = {}
        for ref, result in zip(self._refs, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and the like are not a check's outcome
            versions[ref] = result
        return versions

    async def check(self) -> Resolved | None:
        """One check: every value again when a reference has a new version and all resolve; else None.

        Raises VaultUnavailable when Vault did not answer (the caller backs off). The versions seen are
        not updated here: :meth:`changes` does it once the new values are in use.
        """
        self.checks += 1
        verdict = judge(self._seen, await self.read_versions())
        if verdict.unavailable is not None:
            raise verdict.unavailable
        for ref, error in verdict.unreadable.items():
            log.error("%s", _unreadable_message(ref, error))
        if not verdict.changed:
            return None
        changes = describe_changes(verdict.changed)
        if verdict.unreadable:
            log.error(
                "new version(s) not applied: %s; %d other reference(s) cannot be read (above), and a restart "
                "needs every value",
                changes,
                len(verdict.unreadable),
            )
            return None
        log.info("new version(s): %s; resolving every reference again", changes)
        try:
            return await resolve_versions_from_vault(self._vault, self._refs, concurrency=self._concurrency)
        except VaultUnavailable:
            raise
        except (ResolveError, EnvelopeError, VaultError, TokenFileError) as exc:
            log.error("new version(s) not applied, the worker keeps the values it has: %s", exc)
            return None

    def _delay(self, failures: int) -> float:
        return next_delay(self._interval, failures, self._rng, max_backoff=self._max_backoff)

    async def changes(self, build: Callable[[Mapping[SecretRef, SecretValue]], T]) -> AsyncGenerator[T, None]:
        """Check every interval (jittered; backing off while Vault is unavailable) for ever; yield
        ``build(new values)`` after each change. ``build`` raising ValueError (a value that cannot be
        used) is logged, and the child keeps what it has until the next version."""
        failures = 0
        delay = self._delay(failures)
        while True:
            await self._sleep(delay)
            try:
                resolved = await self.check()
            except VaultUnavailable as exc:
                failures += 1
                delay = self._delay(failures)
                log.warning(
                    "checking %d secret reference(s) for new versions: Vault unavailable (%s); the worker "
                    "keeps running with the values it has (%d failed check(s) in a row, next in %.1fs)",
                    len(self._refs),
                    exc,
                    failures,
                    delay,
                )
                continue
            failures = 0
            delay = self._delay(failures)
            if resolved is None:
                continue
            try:
                result = build(resolved.values)
            except ValueError as exc:
                log.error("new version(s) not applied, the worker keeps the values it has: %s", exc)
                continue
            self._seen = dict(resolved.versions)
            yield result
