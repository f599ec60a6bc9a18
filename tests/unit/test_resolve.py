"""The worker's Vault client and resolver against an in-memory fake Vault at the Transport seam.

The fake speaks the same paths and bodies as Vault (checked against a real OpenBao in
tests/integration): login, KV-v2 data reads (404 when missing, 403 outside the tenant's prefix),
transit batch decrypt (400 with per-item errors when a ciphertext was wrapped by another key).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gtc_secrets.envelope import EnvelopeMismatch, NotAnEnvelope, SecretValue, seal
from gtc_secrets.refs import SecretRef
from gtc_secrets.resolve import (
    Backoff,
    BootTimeout,
    MissingSecret,
    ResolveFailed,
    WrongTransitKey,
    resolve_from_vault,
    retry_until,
)
from gtc_secrets.vault import (
    Forbidden,
    InvalidRequest,
    Method,
    NotFound,
    Response,
    TokenFileError,
    UnexpectedResponse,
    VaultPaths,
    VaultSealed,
    VaultUnavailable,
    WorkerVault,
    error_for_status,
    refresh_after,
    vault_detail,
)

CANARY = "canary-5b1e77-never-print-me"
PATHS = VaultPaths(k8s_mount="kubernetes", kv_mount="secret", kv_prefix="greentic", transit_mount="transit")
ROLE = "gtc-prod-acme"


def ref(name: str, *, tenant: str = "acme", team: str = "core", category: str = "llm") -> SecretRef:
    return SecretRef("prod", tenant, team, category, name)


class FakeVault:
    """An in-memory Vault behind the Transport protocol: enough of Vault to exercise the worker path."""

    def __init__(self, *, lease: int = 900, jwt: str = "jwt-acme") -> None:
        self.now = 0.0
        self.lease = lease
        self.valid_jwts = {jwt}
        self.transit_keys = {"gtc-prod-acme": os.urandom(32), "gtc-prod-globex": os.urandom(32)}
        self.kv: dict[str, dict[str, object]] = {}
        self.kv_versions: dict[str, int] = {}  # KV data path -> current version (every seed adds one)
        self.kv_created: dict[str, str] = {}  # KV data path -> the current version's created_time
        self.writes = 0
        self.kv_deleted: set[str] = set()  # KV data paths whose latest version is soft-deleted
        self.metadata_readable = True  # False: a policy with read on data paths only (tenant-wide role)
        self.tokens: dict[str, float] = {}  # token -> expiry (fake clock)
        self.readable_prefix = "secret/data/greentic/prod/acme/"
        self.decrypt_key = "gtc-prod-acme"
        self.requests: list[tuple[str, str, str | None]] = []
        self.login_jwts: list[str] = []
        self.fail_next: list[Exception | int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self._counter = 0

    # --- seeding, like `gtc-secrets put` would ---
    def wrap(self, key: str, data_key: bytes) -> str:
        nonce = os.urandom(12)
        blob = AESGCM(self.transit_keys[key]).encrypt(nonce, data_key, None)
        return "vault:v1:" + base64.b64encode(nonce + blob).decode()

    def kv_path(self, r: SecretRef) -> str:
        return PATHS.kv_data(r.logical_path)

    def seed(self, r: SecretRef, value: str, *, key: str | None = None, at: SecretRef | None = None) -> None:
        data_key = os.urandom(32)
        wrapped = self.wrap(key or f"gtc-{r.env}-{r.tenant}", data_key)
        path = self.kv_path(at or r)
        self.kv[path] = seal(value.encode(), data_key, wrapped, r, self.kv_path(r))
        self.kv_versions[path] = self.kv_versions.get(path, 0) + 1
        self.writes += 1
        self.kv_created[path] = f"2026-12-07T08:00:00.{self.writes:06d}Z"
        self.kv_deleted.discard(path)

    # --- Transport ---
    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        self.requests.append((method, path, token))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent callers interleave
            if self.fail_next:
                failure = self.fail_next.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return Response(failure, {"errors": ["injected"]})
            return self._route(method, path, token, payload or {})
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True

    def _route(self, method: str, path: str, token: str | None, payload: Mapping[str, Any]) -> Response:
        if method == "POST" and path == PATHS.login():
            if payload.get("role") != ROLE or payload.get("jwt") not in self.valid_jwts:
                return Response(403, {"errors": ["permission denied"]})
            self.login_jwts.append(str(payload["jwt"]))
            self._counter += 1
            new = f"hvs.fake-{self._counter}"
            self.tokens[new] = self.now + self.lease
            return Response(200, {"auth": {"client_token": new, "lease_duration": self.lease}})
        if token is None or self.tokens.get(token, -1.0) <= self.now:
            return Response(403, {"errors": ["permission denied"]})
        if method == "GET" and path.startswith("secret/data/"):
            if not path.startswith(self.readable_prefix):
                return Response(403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]})
            if path not in self.kv:
                return Response(404, {"errors": []})
            version = self.kv_versions.get(path, 1)
            data = None if path in self.kv_deleted else self.kv[path]
            metadata = {"version": version, "created_time": self.kv_created.get(path, "")}
            return Response(200, {"data": {"data": data, "metadata": metadata}})
        if method == "GET" and path.startswith("secret/metadata/"):
            data_path = path.replace("secret/metadata/", "secret/data/", 1)
            if not self.metadata_readable or not data_path.startswith(self.readable_prefix):
                return Response(403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]})
            if data_path not in self.kv:
                return Response(404, {"errors": []})
            version = self.kv_versions.get(data_path, 1)
            deleted = "2026-12-07T08:00:00Z" if data_path in self.kv_deleted else ""
            created = self.kv_created.get(data_path, "")
            versions = {str(version): {"created_time": created, "deletion_time": deleted, "destroyed": False}}
            return Response(200, {"data": {"current_version": version, "versions": versions}})
        if method == "POST" and path == PATHS.transit_decrypt(self.decrypt_key):
            results: list[dict[str, str]] = []
            for item in payload["batch_input"]:
                raw = base64.b64decode(item["ciphertext"].removeprefix("vault:v1:"))
                try:
                    plain = AESGCM(self.transit_keys[self.decrypt_key]).decrypt(raw[:12], raw[12:], None)
                    results.append({"plaintext": base64.b64encode(plain).decode()})
                except InvalidTag:
                    results.append({"plaintext": "", "error": "cipher: message authentication failed"})
            status = 400 if any("error" in r for r in results) else 200
            return Response(status, {"data": {"batch_results": results}})
        return Response(403, {"errors": ["permission denied"]})

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.startswith(prefix))


@pytest.fixture
def fake() -> FakeVault:
    return FakeVault()


def client(fake: FakeVault, token_file: Path) -> WorkerVault:
    return WorkerVault(fake, PATHS, role=ROLE, token_path=token_file, clock=lambda: fake.now)


# ---------------------------------------------------------------------------------------------
# Status table and small pure helpers.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, InvalidRequest),
        (401, Forbidden),
        (403, Forbidden),
        (404, NotFound),
        (412, VaultUnavailable),
        (307, VaultUnavailable),
        (429, VaultUnavailable),
        (500, VaultUnavailable),
        (502, VaultUnavailable),
        (503, VaultSealed),
        (504, VaultUnavailable),
        (599, VaultUnavailable),
        (418, UnexpectedResponse),
        (302, UnexpectedResponse),
    ],
)
def test_status_table(status: int, kind: type[Exception]) -> None:
    """One table maps HTTP status to exception; the message has method, path, status, not the payload."""
    body = {"errors": ["permission denied"], "data": {"data": {"value": CANARY}}}
    error = error_for_status(status, "GET", "secret/data/greentic/prod/acme/core/llm/key", body)
    assert type(error) is kind
    assert str(error).startswith(f"GET /v1/secret/data/greentic/prod/acme/core/llm/key: {status} ")
    assert CANARY not in str(error)


def test_vault_detail_is_short_printable_text() -> None:
    """Vault's own error strings are kept, flattened and shortened; anything else in the body is ignored."""
    assert vault_detail({"errors": ["1 error occurred:\n\t* permission denied\n\n"]}) == (
        "1 error occurred: * permission denied"
    )
    assert vault_detail({"data": CANARY}) == ""
    assert len(vault_detail({"errors": ["x" * 1000]})) <= 203
    assert "\x1b" not in vault_detail({"errors": ["\x1b[31mred"]})


@pytest.mark.parametrize(
    ("lease", "expected"),
    [(900, 840.0), (3600, 3540.0), (100, 80.0), (5, 4.0), (1, 0.0), (0, float("inf")), (-1, float("inf"))],
)
def test_refresh_after(lease: float, expected: float) -> None:
    """Log in again a margin before the lease ends: at most 60 s, at least 1 s, at most 20 % of the lease."""
    assert refresh_after(lease) == expected


# ---------------------------------------------------------------------------------------------
# Login and token lifetime.
# ---------------------------------------------------------------------------------------------


async def test_login_sends_role_and_token_file_content(fake: FakeVault, token_file: Path) -> None:
    """POST auth/kubernetes/login with {role, jwt}; the file's trailing newline is stripped."""
    vault = client(fake, token_file)
    await vault.login()
    assert fake.login_jwts == ["jwt-acme"]
    assert fake.requests == [("POST", "auth/kubernetes/login", None)]


@pytest.mark.parametrize("content", [None, "", "  \n"])
async def test_unusable_token_file_is_named(fake: FakeVault, tmp_path: Path, content: str | None) -> None:
    """A missing or empty token file is a clear error naming the file, before any request."""
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenFileError, match=str(path)):
        await client(fake, path).login()
    assert fake.requests == []


async def test_login_refused_is_forbidden(fake: FakeVault, tmp_path: Path) -> None:
    """A token Vault does not accept is a 403 at login, not retried."""
    path = tmp_path / "token"
    path.write_text("jwt-of-the-default-service-account")
    with pytest.raises(Forbidden, match="POST /v1/auth/kubernetes/login: 403"):
        await client(fake, path).login()
    assert fake.count("POST", "auth/") == 1


async def test_token_is_refreshed_before_it_expires_and_the_file_is_re_read(
    fake: FakeVault, token_file: Path
) -> None:
    """Past lease minus margin the client logs in again, with the (rotated) token file's new content."""
    fake.seed(ref("a"), "v")
    vault = client(fake, token_file)
    await vault.read_kv(ref("a").logical_path)
    fake.now = 839.0
    await vault.read_kv(ref("a").logical_path)
    assert vault.logins == 1
    token_file.write_text("jwt-rotated")
    fake.valid_jwts.add("jwt-rotated")
    fake.now = 841.0  # past 900 - 60: refresh before Vault would refuse the token
    await vault.read_kv(ref("a").logical_path)
    assert vault.logins == 2
    assert fake.login_jwts == ["jwt-acme", "jwt-rotated"]
    assert fake.count("GET", "secret/") == 3  # no read was refused and retried on the way


async def test_revoked_token_is_replaced_transparently_after_a_403(fake: FakeVault, token_file: Path) -> None:
    """A 403 with a token Vault no longer knows: one fresh login and a retry, invisible to the caller."""
    fake.seed(ref("a"), "v")
    vault = client(fake, token_file)
    await vault.read_kv(ref("a").logical_path)
    fake.tokens.clear()  # revoked (or expired early) on the Vault side
    read = await vault.read_kv(ref("a").logical_path)
    assert read.path == "secret/data/greentic/prod/acme/core/llm/a"
    assert read.data["gtc_envelope"] == 1
    assert vault.logins == 2


async def test_403_after_a_fresh_login_is_final(fake: FakeVault, token_file: Path) -> None:
    """Another tenant's path: one re-login, then Forbidden. Not retried forever."""
    vault = client(fake, token_file)
    with pytest.raises(Forbidden, match="GET /v1/secret/data/greentic/prod/globex/core/llm/a: 403"):
        await vault.read_kv(ref("a", tenant="globex").logical_path)
    assert vault.logins == 2
    assert fake.count("GET", "secret/") == 2


async def test_concurrent_403s_share_one_re_login(fake: FakeVault, token_file: Path) -> None:
    """Many calls refused with the same stale token trigger a single new login."""
    refs = [ref(f"s{i}") for i in range(10)]
    for r in refs:
        fake.seed(r, "v")
    vault = client(fake, token_file)
    await vault.login()
    fake.tokens.clear()
    await asyncio.gather(*(vault.read_kv(r.logical_path) for r in refs))
    assert vault.logins == 2


# ---------------------------------------------------------------------------------------------
# Resolution.
# ---------------------------------------------------------------------------------------------


async def test_many_references_one_login_parallel_reads_one_batch_decrypt(
    fake: FakeVault, token_file: Path
) -> None:
    """20 references: 1 login, 20 KV reads (at most 8 in flight), exactly 1 transit call."""
    refs = [ref(f"key{i}", team="core" if i % 2 else "default") for i in range(20)]
    for i, r in enumerate(refs):
        fake.seed(r, f"value-{i}")
    values = await resolve_from_vault(client(fake, token_file), [*refs, refs[0]], concurrency=8)
    assert {r: v.reveal_bytes().decode() for r, v in values.items()} == {
        r: f"value-{i}" for i, r in enumerate(refs)
    }
    assert fake.count("POST", "auth/") == 1
    assert fake.count("GET", "secret/") == 20
    assert fake.count("POST", "transit/") == 1
    assert 1 < fake.max_in_flight <= 8


async def test_no_references_no_requests(fake: FakeVault, token_file: Path) -> None:
    """Nothing to resolve, nothing sent (not even a login)."""
    assert await resolve_from_vault(client(fake, token_file), []) == {}
    assert fake.requests == []


async def test_missing_secret_is_a_hard_error_naming_ref_and_path(fake: FakeVault, token_file: Path) -> None:
    """A 404 on KV: the error names the reference, the KV path and how to seed it; no transit call."""
    with pytest.raises(MissingSecret) as info:
        await resolve_from_vault(client(fake, token_file), [ref("absent")])
    message = str(info.value)
    assert "secret://prod/acme/core/llm/absent" in message
    assert "secret/data/greentic/prod/acme/core/llm/absent" in message
    assert "gtc-secrets put" in message
    assert fake.count("POST", "transit/") == 0


async def test_every_failing_reference_is_reported_at_once(fake: FakeVault, token_file: Path) -> None:
    """Two missing and one plaintext entry: all three are named in one error."""
    fake.seed(ref("ok"), CANARY)
    fake.kv[fake.kv_path(ref("plain"))] = {"value": CANARY}
    with pytest.raises(ResolveFailed) as info:
        await resolve_from_vault(
            client(fake, token_file), [ref("ok"), ref("gone1"), ref("gone2"), ref("plain")]
        )
    message = str(info.value)
    assert "3 secret reference(s)" in message
    for name in ("gone1", "gone2", "plain"):
        assert f"llm/{name}" in message
    assert "not a gtc-secrets envelope" in message
    assert CANARY not in message


async def test_plaintext_entry_is_refused(fake: FakeVault, token_file: Path) -> None:
    """A raw `kv put` value is never handed out: NotAnEnvelope with a re-seed hint."""
    fake.kv[fake.kv_path(ref("plain"))] = {"value": CANARY}
    with pytest.raises(NotAnEnvelope, match="gtc-secrets put secret://prod/acme/core/llm/plain") as info:
        await resolve_from_vault(client(fake, token_file), [ref("plain")])
    assert CANARY not in str(info.value)


async def test_envelope_copied_to_another_name_fails(fake: FakeVault, token_file: Path) -> None:
    """Same tenant key, other path: transit unwraps, the AAD check refuses."""
    fake.seed(ref("original"), CANARY, at=ref("copy"))
    with pytest.raises(EnvelopeMismatch, match="secret://prod/acme/core/llm/copy") as info:
        await resolve_from_vault(client(fake, token_file), [ref("copy")])
    assert CANARY not in str(info.value)


async def test_envelope_copied_from_another_tenant_fails_at_transit(
    fake: FakeVault, token_file: Path
) -> None:
    """globex's envelope placed in acme's path: acme's transit key cannot unwrap it."""
    fake.seed(ref("k", tenant="globex"), CANARY, at=ref("k"))
    fake.seed(ref("fine"), "fine-value")
    with pytest.raises(WrongTransitKey) as info:
        await resolve_from_vault(client(fake, token_file), [ref("k"), ref("fine")])
    message = str(info.value)
    assert "secret://prod/acme/core/llm/k" in message
    assert "gtc-prod-acme" in message
    assert "llm/fine" not in message
    assert CANARY not in message
    assert fake.count("POST", "transit/") == 1


async def test_references_of_two_tenants_are_a_programming_error(fake: FakeVault, token_file: Path) -> None:
    """parse_reference prevents it; the resolver still refuses to mix transit keys."""
    with pytest.raises(Exception, match="several transit keys"):
        await resolve_from_vault(client(fake, token_file), [ref("a"), ref("a", tenant="globex")])
    assert fake.requests == []


async def test_unavailable_during_reads_is_raised_as_such(fake: FakeVault, token_file: Path) -> None:
    """A transient error while reading surfaces as VaultUnavailable (so the boot loop retries)."""
    fake.seed(ref("a"), "v")
    fake.seed(ref("b"), "v")
    vault = client(fake, token_file)
    await vault.login()
    fake.fail_next = [503]
    with pytest.raises(VaultSealed):
        await resolve_from_vault(vault, [ref("a"), ref("b")])


async def test_canary_never_logged(
    fake: FakeVault, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resolution logs (at DEBUG) mention counts and keys, never values."""
    caplog.set_level(logging.DEBUG)
    fake.seed(ref("a"), CANARY)
    fake.kv[fake.kv_path(ref("b"))] = {"value": CANARY}
    values = await resolve_from_vault(client(fake, token_file), [ref("a")])
    assert values[ref("a")] == SecretValue(CANARY.encode())
    with pytest.raises(NotAnEnvelope):
        await resolve_from_vault(client(fake, token_file), [ref("b")])
    assert caplog.records
    assert CANARY not in caplog.text
    assert CANARY not in repr(values)


# ---------------------------------------------------------------------------------------------
# Bounded boot retry.
# ---------------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_is_jittered_exponential_and_capped() -> None:
    """Each delay is in [step/2, step], steps double from 0.2 s up to the 5 s cap."""
    delays = Backoff().delays(random.Random(7))
    steps = [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    got = [next(delays) for _ in steps]
    for delay, step in zip(got, steps, strict=True):
        assert step / 2 <= delay <= step
    other = Backoff().delays(random.Random(8))
    assert got != [next(other) for _ in steps]


async def test_retry_until_success_after_transient_errors() -> None:
    """Unavailable twice, then success: two pauses, the result returned."""
    time = FakeTime()
    outcomes: list[Exception | None] = [VaultUnavailable("GET", "x"), VaultSealed("GET", "x", 503), None]

    async def operation() -> str:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return "ok"

    result = await retry_until(
        operation, timeout=30, what="boot", clock=time.clock, sleep=time.sleep, rng=random.Random(1)
    )
    assert result == "ok"
    assert len(time.sleeps) == 2


async def test_retry_until_gives_up_at_the_boot_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """Always unavailable: bounded attempts, the pauses never exceed the timeout, a clear BootTimeout."""
    time = FakeTime()
    attempts = 0

    async def operation() -> None:
        nonlocal attempts
        attempts += 1
        raise VaultUnavailable("POST", "auth/kubernetes/login", None, "ClientConnectorError: refused")

    with pytest.raises(BootTimeout) as info:
        await retry_until(
            operation,
            timeout=10,
            what="resolving 2 secret reference(s) from https://v",
            clock=time.clock,
            sleep=time.sleep,
        )
    assert time.now == pytest.approx(10.0)
    assert sum(time.sleeps) == pytest.approx(10.0)
    assert max(time.sleeps) <= 5.0
    assert 5 <= attempts <= 20
    message = str(info.value)
    assert "still unavailable after 10s" in message
    assert f"({attempts} attempt(s))" in message
    assert "POST /v1/auth/kubernetes/login" in message
    assert "retrying in" in caplog.text


async def test_retry_until_does_not_retry_permission_errors() -> None:
    """Forbidden (or anything not transient) propagates at once, without a pause."""
    time = FakeTime()

    async def operation() -> None:
        raise Forbidden("GET", "secret/data/x", 403)

    with pytest.raises(Forbidden):
        await retry_until(operation, timeout=30, what="boot", clock=time.clock, sleep=time.sleep)
    assert time.sleeps == []


async def test_retry_until_bounds_a_hanging_attempt() -> None:
    """An attempt that never answers is cut at the deadline (real clock, 0.2 s)."""

    async def operation() -> None:
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BootTimeout, match=r"after 0\.2s"):
        await retry_until(operation, timeout=0.2, what="boot")
    assert loop.time() - start < 2.0
