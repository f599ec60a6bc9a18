"""Resolve many references from Vault at once, and the bounded boot retry around it.

One login (shared by every call), the KV reads all at once (bounded; over the transport's pool), ONE transit
batch-decrypt of all wrapped data keys (every reference of a worker is in its env + tenant, so one
transit key ``gtc-<env>-<tenant>``), then AES-GCM locally. Every failing reference is reported at once,
so a broken deployment is fixed in one round; a missing secret is always a hard error.

Only :class:`~gtc_secrets.vault.VaultUnavailable` (unreachable, sealed, 429/5xx) is retried, with
jittered, capped exponential backoff until the boot timeout. Permission errors are final: the client
already logged in again once after a 403.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gtc_secrets.constants import transit_key_name
from gtc_secrets.envelope import Envelope, EnvelopeError, SecretValue, open_envelope, parse_envelope
from gtc_secrets.refs import SecretRef
from gtc_secrets.vault import (
    KvVersion,
    NotFound,
    TransitItemErrors,
    VaultError,
    VaultUnavailable,
    WorkerVault,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# Reads outstanding at once. The transport bounds the connections and queues the reads for them, so this
# only bounds how many requests wait in its queue: every reference of a typical worker goes out at once.
DEFAULT_CONCURRENCY = 64


class ResolveError(Exception):
    """One or more references cannot be resolved. Messages name references and paths, never values."""


class MissingSecret(ResolveError):
    def __init__(self, ref: SecretRef, where: str) -> None:
        self.ref = ref
        super().__init__(f"{ref.uri}: no such secret ({where}); seed it with gtc-secrets put {ref.uri}")


class WrongTransitKey(ResolveError):
    def __init__(self, ref: SecretRef, location: str, key: str, detail: str) -> None:
        self.ref = ref
        super().__init__(
            f"{ref.uri} (KV {location}): the wrapped data key does not unwrap with transit key {key} "
            f"(envelope copied from another tenant or env?): {detail}"
        )


class ResolveFailed(ResolveError):
    """Several references failed; ``errors`` holds each one."""

    def __init__(self, errors: Sequence[Exception]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} secret reference(s) could not be resolved:\n{lines}")


class BootTimeout(Exception):
    """Vault stayed unavailable for the whole boot timeout."""

    def __init__(self, what: str, timeout: float, attempts: int, last: Exception | None) -> None:
        self.last = last
        reason = f"; last error: {last}" if last else ""
        super().__init__(
            f"{what}: Vault still unavailable after {timeout:g}s ({attempts} attempt(s)){reason}"
        )


# ---------------------------------------------------------------------------------------------
# Bounded retry.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": half the step fixed, half random, capped."""

    initial: float = 0.2
    cap: float = 5.0
    multiplier: float = 2.0

    def delays(self, rng: random.Random) -> Iterator[float]:
        step = self.initial
        while True:
            yield step / 2 + rng.uniform(0, step / 2)
            step = min(self.cap, step * self.multiplier)


async def retry_until(
    operation: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``operation`` until it succeeds or raises something other than VaultUnavailable.

    Each attempt and each pause are bounded by what is left of ``timeout``, so the whole is bounded.
    """
    deadline = clock() + timeout
    delays = (backoff or Backoff()).delays(rng or random.Random())  # noqa: S311 - jitter, not crypto
    attempts = 0
    last: Exception | None = None
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise BootTimeout(what, timeout, attempts, last)
        attempts += 1
        try:
            async with asyncio.timeout(remaining):
                return await operation()
        except VaultUnavailable as exc:
            last = exc
        except TimeoutError:
            raise BootTimeout(what, timeout, attempts, last) from None
        remaining = deadline - clock()
        if remaining <= 0:
            raise BootTimeout(what, timeout, attempts, last)
        delay = min(next(delays), remaining)
        log.warning("%s: Vault unavailable (%s); retrying in %.2fs", what, last, delay)
        await sleep(delay)


# ---------------------------------------------------------------------------------------------
# Resolution.
# ---------------------------------------------------------------------------------------------


def _raise_collected(results: Sequence[object]) -> None:
    """Re-raise transient errors as such (the caller retries), else all errors together."""
    errors: list[Exception] = []
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
        if isinstance(result, VaultUnavailable):
            raise result
        if isinstance(result, Exception):
            errors.append(result)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ResolveFailed(errors)


@dataclass(frozen=True)
class Resolved:
    """Every reference's value, and the KV-v2 version each value was read from (``exec --watch``)."""

    values: dict[SecretRef, SecretValue]
    versions: dict[SecretRef, KvVersion]


async def resolve_from_vault(
    vault: WorkerVault, refs: Sequence[SecretRef], *, concurrency: int = DEFAULT_CONCURRENCY
) -> dict[SecretRef, SecretValue]:
    """Resolve every reference (all in one env + tenant) with one login and one batch decrypt."""
    return (await resolve_versions_from_vault(vault, refs, concurrency=concurrency)).values


async def resolve_versions_from_vault(
    vault: WorkerVault, refs: Sequence[SecretRef], *, concurrency: int = DEFAULT_CONCURRENCY
) -> Resolved:
    """:func:`resolve_from_vault`, also keeping the version each envelope was read at.

    The versions come from the data reads themselves, not from a second metadata read, so that a ``put``
    landing between the two can never be taken for what the worker already has.
    """
    unique = sorted(set(refs))
    if not unique:
        return Resolved({}, {})
    keys = {transit_key_name(ref.env, ref.tenant) for ref in unique}
    if len(keys) != 1:
        # parse_reference keeps a worker inside its env + tenant, so this is a programming error.
        raise ResolveError(f"references span several transit keys ({', '.join(sorted(keys))})")
    (key,) = keys
    semaphore = asyncio.Semaphore(concurrency)

    async def read(ref: SecretRef) -> tuple[str, Envelope, KvVersion]:
        async with semaphore:
            try:
                read = await vault.read_kv(ref.logical_path)
            except NotFound as exc:
                raise MissingSecret(ref, f"KV {exc.path}") from None
        return read.path, parse_envelope(read.data, ref, read.path), read.version

    read_results = await asyncio.gather(*(read(ref) for ref in unique), return_exceptions=True)
    _raise_collected(read_results)
    envelopes = [result for result in read_results if isinstance(result, tuple)]

    try:
        data_keys = await vault.decrypt_batch(key, [envelope.wrapped_key for _, envelope, _ in envelopes])
    except TransitItemErrors as exc:
        _raise_collected(
            [
                WrongTransitKey(unique[i], envelopes[i][0], key, detail)
                for i, detail in sorted(exc.failed.items())
            ]
        )
        raise  # unreachable: failed is never empty

    values: dict[SecretRef, SecretValue] = {}
    errors: list[Exception] = []
    for ref, (location, envelope, _), data_key in zip(unique, envelopes, data_keys, strict=True):
        try:
            values[ref] = open_envelope(envelope, data_key, ref, location)
        except EnvelopeError as exc:
            errors.append(exc)
    _raise_collected(errors)
    log.info("resolved %d secret reference(s) from Vault (one transit batch with key %s)", len(values), key)
    versions = {ref: version for ref, (_, _, version) in zip(unique, envelopes, strict=True)}
    return Resolved(values, versions)


__all__ = [
    "Backoff",
    "BootTimeout",
    "MissingSecret",
    "ResolveError",
    "ResolveFailed",
    "Resolved",
    "VaultError",
    "WrongTransitKey",
    "resolve_from_vault",
    "resolve_versions_from_vault",
    "retry_until",
]
