"""The worker runtime against a real OpenBao (real TLS, real Kubernetes auth, KV-v2, transit).

The module's OpenBao also serves plain http on a second listener (OPENBAO_PLAIN_HTTP), for the worker that
is allowed to use it (GREENTIC_VAULT_INSECURE_HTTP=true).

Vault's Kubernetes auth calls a TokenReview endpoint that STANDS IN FOR THE KUBERNETES API SERVER (there
is no Kubernetes here); it really verifies the ServiceAccount JWTs the worker logs in with. The fixtures
(tests/integration/conftest.py) bootstrap env ``prod`` for tenants ``acme`` (namespace acme-prod) and
``globex`` (namespace globex-prod) with ``gtc-secrets bootstrap``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from gtc_secrets import cli
from gtc_secrets.backends import VaultBackend, make_backend
from gtc_secrets.curl_transport import CurlTransport, TlsTrust
from gtc_secrets.envelope import EnvelopeMismatch, NotAnEnvelope, SecretValue
from gtc_secrets.refs import SecretRef
from gtc_secrets.resolve import MissingSecret, WrongTransitKey, resolve_from_vault
from gtc_secrets.seed import HvacAdminVault, put_secret
from gtc_secrets.settings import AdminSettings, RuntimeSettings, VaultWorkerSettings
from gtc_secrets.vault import (
    Forbidden,
    Method,
    Response,
    VaultPaths,
    WorkerVault,
)
from tests.integration.conftest import ENV, TENANTS, Bootstrapped, bootstrap_args
from tests.integration.test_exec import GTC_SECRETS, base_environ, run_exec

pytestmark = pytest.mark.integration

CANARY = "canary-int-4e8b1d-never-print-me"
OPENBAO_PLAIN_HTTP = True  # the conftest's openbao fixture adds a plain-http listener for this module
PATHS = VaultPaths(k8s_mount="kubernetes", kv_mount="secret", kv_prefix="greentic", transit_mount="transit")


def acme(name: str, *, team: str = "core", category: str = "llm", tenant: str = "acme") -> SecretRef:
    return SecretRef("prod", tenant, team, category, name)


def kv_sub(ref: SecretRef) -> str:
    return f"greentic/{ref.logical_path}"


def seed(bootstrapped: Bootstrapped, ref: SecretRef, value: str) -> None:
    """Store an envelope the way `gtc-secrets put` does (hvac, admin token)."""
    settings = AdminSettings.from_environ(bootstrapped.openbao.admin_environ())
    put_secret(HvacAdminVault(settings), settings, ref, value.encode())


def worker_environ(
    bootstrapped: Bootstrapped, token_file: Path, *, tenant: str = "acme", team: str = "core", **extra: str
) -> dict[str, str]:
    """The environment the webhook gives a worker pod (plus the test server's CA)."""
    return {
        "GREENTIC_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": bootstrapped.openbao.addr,
        "VAULT_CACERT": bootstrapped.openbao.ca_file,
        "VAULT_K8S_ROLE": f"gtc-prod-{tenant}",
        "VAULT_K8S_TOKEN_PATH": str(token_file),
        "GREENTIC_ENV": "prod",
        "GREENTIC_TENANT": tenant,
        "GREENTIC_TEAM": team,
        **extra,
    }


async def resolve(environ: Mapping[str, str], refs: list[SecretRef]) -> dict[SecretRef, SecretValue]:
    return await make_backend(RuntimeSettings.from_environ(environ)).resolve(refs)


class Recording:
    """A spy at the Transport seam around the real transport: (method, path, status, token), and the most
    requests it was given at once."""

    def __init__(self, inner: CurlTransport) -> None:
        self.inner = inner
        self.log: list[tuple[str, str, int, str | None]] = []
        self.in_flight = 0
        self.peak = 0

    async def request(
        self, method: Method, path: str, *, token: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            response = await self.inner.request(method, path, token=token, payload=payload)
        finally:
            self.in_flight -= 1
        self.log.append((method, path, response.status, token))
        return response

    async def close(self) -> None:
        await self.inner.close()


def worker_client(
    bootstrapped: Bootstrapped, token_file: Path, *, role: str = "gtc-prod-acme", **kw: Any
) -> tuple[WorkerVault, Recording]:
    transport = Recording(
        CurlTransport(bootstrapped.openbao.addr, TlsTrust.for_ca_file(Path(bootstrapped.openbao.ca_file)))
    )
    return WorkerVault(transport, PATHS, role=role, token_path=token_file, **kw), transport


def audit_requests(bootstrapped: Bootstrapped, *, since: int, namespace: str) -> list[tuple[str, str]]:
    """(operation, path) of audit *request* entries made by a worker of ``namespace`` (or its login)."""
    found: list[tuple[str, str]] = []
    for entry in bootstrapped.openbao.audit_entries()[since:]:
        if entry.get("type") != "request":
            continue
        request = entry.get("request", {})
        metadata = (entry.get("auth") or {}).get("metadata") or {}
        path = request.get("path", "")
        if metadata.get("service_account_namespace") == namespace or path == "auth/kubernetes/login":
            found.append((request.get("operation", ""), path))
    return found


def audit_responses(bootstrapped: Bootstrapped, *, since: int) -> list[dict[str, Any]]:
    return [e for e in bootstrapped.openbao.audit_entries()[since:] if e.get("type") == "response"]


# ---------------------------------------------------------------------------------------------
# The happy path, with the audit trail.
# ---------------------------------------------------------------------------------------------


async def test_worker_logs_in_reads_and_decrypts_a_seeded_secret(bootstrapped: Bootstrapped) -> None:
    """Token file -> Kubernetes login -> KV read -> transit decrypt -> AES-GCM: the value; all audited."""
    ref = acme("openai_key")
    seed(bootstrapped, ref, CANARY)
    since = len(bootstrapped.openbao.audit_entries())
    reviews = bootstrapped.reviewer.reviews
    token = bootstrapped.worker_token("acme-prod")

    values = await resolve(worker_environ(bootstrapped, token), [ref])

    assert values[ref].reveal_bytes() == CANARY.encode()
    assert bootstrapped.reviewer.reviews == reviews + 1  # Vault really asked the TokenReview stand-in
    requests = audit_requests(bootstrapped, since=since, namespace="acme-prod")
    assert requests == [
        ("update", "auth/kubernetes/login"),
        ("read", "secret/data/greentic/prod/acme/core/llm/openai_key"),
        ("update", "transit/decrypt/gtc-prod-acme"),
    ]
    logins = [
        e
        for e in audit_responses(bootstrapped, since=since)
        if e["request"]["path"] == "auth/kubernetes/login"
    ]
    metadata = logins[0]["auth"]["metadata"]
    assert metadata["role"] == "gtc-prod-acme"
    assert metadata["service_account_name"] == "gtc-worker"
    assert metadata["service_account_namespace"] == "acme-prod"
    assert logins[0]["auth"]["policies"] == ["gtc-prod-acme"]
    assert CANARY not in bootstrapped.openbao.audit_log.read_text()


async def seed_and_resolve(bootstrapped: Bootstrapped, refs: list[SecretRef], prefix: str) -> int:
    """Seed ``<prefix>-<i>`` for each reference, resolve them all as an acme worker, check every value;
    the audit log position before the resolution."""
    for i, ref in enumerate(refs):
        seed(bootstrapped, ref, f"{prefix}-{i}")
    since = len(bootstrapped.openbao.audit_entries())
    values = await resolve(worker_environ(bootstrapped, bootstrapped.worker_token("acme-prod")), refs)
    assert {r: v.reveal_bytes() for r, v in values.items()} == {
        r: f"{prefix}-{i}".encode() for i, r in enumerate(refs)
    }
    return since


async def test_many_references_one_login_one_batch_decrypt(bootstrapped: Bootstrapped) -> None:
    """12 references (two teams): 1 login, 12 KV reads, exactly 1 transit decrypt call, all values right."""
    refs = [acme(f"many{i}", team="core" if i % 3 else "default") for i in range(12)]
    since = await seed_and_resolve(bootstrapped, refs, "value")
    requests = audit_requests(bootstrapped, since=since, namespace="acme-prod")
    assert [p for _, p in requests].count("auth/kubernetes/login") == 1
    assert sum(1 for _, p in requests if p.startswith("secret/data/")) == 12
    assert [p for _, p in requests if p.startswith("transit/")] == ["transit/decrypt/gtc-prod-acme"]


async def test_many_references_travel_concurrently_on_one_http2_connection(
    bootstrapped: Bootstrapped,
) -> None:
    """40 references, as a booting worker resolves them: all values right; the reads were in flight at
    once, OpenBao answered in HTTP/2 (ALPN), and every request (login, reads, decrypt) came over one TCP
    connection (one client port in Vault's audit log): one TLS handshake per boot."""
    refs = [acme(f"pooled{i:02d}") for i in range(40)]
    for i, ref in enumerate(refs):
        seed(bootstrapped, ref, f"{CANARY}-{i}")
    since = len(bootstrapped.openbao.audit_entries())
    vault, transport = worker_client(bootstrapped, bootstrapped.worker_token("acme-prod"))
    try:
        values = await resolve_from_vault(vault, refs)
    finally:
        await vault.close()
    assert {r: v.reveal_bytes() for r, v in values.items()} == {
        r: f"{CANARY}-{i}".encode() for i, r in enumerate(refs)
    }
    assert transport.inner.http_version == "HTTP/2"
    assert transport.peak > 10
    ports: dict[str, set[int]] = {"login": set(), "kv": set(), "transit": set()}
    for entry in bootstrapped.openbao.audit_entries()[since:]:
        request = entry.get("request", {})
        path = request.get("path", "")
        kind = "login" if path == "auth/kubernetes/login" else path.partition("/")[0]
        kind = {"secret": "kv"}.get(kind, kind)
        if entry.get("type") == "request" and kind in ports:
            ports[kind].add(request["remote_port"])
    assert all(ports.values())
    assert len(set().union(*ports.values())) == 1


async def test_put_through_the_cli_then_get(
    bootstrapped: Bootstrapped, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`gtc-secrets put` (value on stdin) stores only an envelope; `gtc-secrets get` prints the value."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CANARY.encode() + b"\n")))
    argv = ["put", "secret://telegram/bot_token", "--env", "prod", "--tenant", "acme", "--team", "core"]
    assert cli.main(argv, bootstrapped.openbao.admin_environ()) == 0
    stored = bootstrapped.openbao.client().secrets.kv.v2.read_secret_version(
        path="greentic/prod/acme/core/telegram/bot_token", raise_on_deleted_version=True
    )["data"]["data"]
    assert set(stored) == {"gtc_envelope", "alg", "wrapped_key", "nonce", "ciphertext"}
    assert CANARY not in str(stored)
    capfd.readouterr()

    token = bootstrapped.worker_token("acme-prod")
    # get runs its own event loop: run it off this test's loop.
    code = await asyncio.to_thread(
        cli.main, ["get", "secret://telegram/bot_token"], worker_environ(bootstrapped, token)
    )
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out == CANARY
    assert CANARY not in err


# ---------------------------------------------------------------------------------------------
# Isolation between tenants.
# ---------------------------------------------------------------------------------------------


async def test_tenant_a_cannot_read_tenant_b(bootstrapped: Bootstrapped) -> None:
    """acme's worker asking Vault directly for globex's KV path gets 403 (after one fresh login: final)."""
    seed(bootstrapped, acme("shared", tenant="globex"), "globex-value")
    vault, transport = worker_client(bootstrapped, bootstrapped.worker_token("acme-prod"))
    try:
        with pytest.raises(Forbidden) as info:
            await vault.read_kv(acme("shared", tenant="globex").logical_path)
    finally:
        await vault.close()
    assert info.value.status == 403
    assert "GET /v1/secret/data/greentic/prod/globex/core/llm/shared: 403" in str(info.value)
    assert [status for _, _, status, _ in transport.log] == [
        200,
        403,
        200,
        403,
    ]  # login, read, re-login, read


async def test_tenant_a_cannot_unwrap_with_tenant_b_key(bootstrapped: Bootstrapped) -> None:
    """acme's worker may not call transit decrypt with globex's key: 403."""
    vault, _ = worker_client(bootstrapped, bootstrapped.worker_token("acme-prod"))
    try:
        with pytest.raises(Forbidden, match="transit/decrypt/gtc-prod-globex: 403"):
            await vault.decrypt_batch("gtc-prod-globex", ["vault:v1:AAAA"])
    finally:
        await vault.close()


def test_worker_token_cannot_write_or_delete(bootstrapped: Bootstrapped) -> None:
    """With the worker's own Vault token: no write, no delete, no list, in any tenant; metadata (versions,
    for exec --watch) only in its own tenant."""
    seed(bootstrapped, acme("protected"), "v")
    seed(bootstrapped, acme("protected", tenant="globex"), "v")
    client = bootstrapped.openbao.client(token="")
    jwt = bootstrapped.worker_token("acme-prod").read_text()
    client.auth.kubernetes.login(role="gtc-prod-acme", jwt=jwt)
    kv = client.secrets.kv.v2
    for tenant in ("acme", "globex"):
        path = kv_sub(acme("protected", tenant=tenant))
        attempts: dict[str, Callable[[], object]] = {
            "write": partial(kv.create_or_update_secret, path=path, secret={"value": "x"}),
            "patch": partial(
                client.adapter.request,
                "PATCH",
                f"/v1/secret/data/{path}",
                json={"data": {"value": "x"}},
                headers={"Content-Type": "application/merge-patch+json"},
            ),
            "delete latest": partial(kv.delete_latest_version_of_secret, path=path),
            "delete versions": partial(kv.delete_secret_versions, path=path, versions=[1]),
            "destroy": partial(kv.destroy_secret_versions, path=path, versions=[1]),
            "delete metadata": partial(kv.delete_metadata_and_all_versions, path=path),
            "read metadata": partial(kv.read_secret_metadata, path=path),
            "list": partial(kv.list_secrets, path="greentic/prod/acme"),
        }
        refused = []
        for what, attempt in attempts.items():
            try:
                attempt()
            except hvac.exceptions.Forbidden:
                refused.append(what)
        expected = [what for what in attempts if not (tenant == "acme" and what == "read metadata")]
        assert refused == expected, f"{tenant}: allowed {set(attempts) - set(refused)}"
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.encrypt_data(name="gtc-prod-acme", plaintext="eA==")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.generate_data_key(name="gtc-prod-acme", key_type="plaintext")
    # Still intact, as the admin sees it.
    root = bootstrapped.openbao.client()
    data = root.secrets.kv.v2.read_secret_version(
        path=kv_sub(acme("protected")), raise_on_deleted_version=True
    )
    assert data["data"]["data"]["gtc_envelope"] == 1


def test_the_runtime_has_no_write_path() -> None:
    """Read-only by construction: the worker's client offers login, reads and decrypt only."""
    public = {name for name in dir(WorkerVault) if not name.startswith("_")}
    assert public == {"close", "login", "read_kv", "read_kv_version", "decrypt_batch"}


# ---------------------------------------------------------------------------------------------
# Envelopes that must not open.
# ---------------------------------------------------------------------------------------------


async def test_envelope_copied_to_another_name_fails(bootstrapped: Bootstrapped) -> None:
    """An admin (or attacker with write access) copies acme's envelope to another name: AAD refuses it."""
    seed(bootstrapped, acme("original"), CANARY)
    root = bootstrapped.openbao.client()
    envelope = root.secrets.kv.v2.read_secret_version(
        path=kv_sub(acme("original")), raise_on_deleted_version=True
    )["data"]["data"]
    root.secrets.kv.v2.create_or_update_secret(path=kv_sub(acme("copy", team="default")), secret=envelope)
    with pytest.raises(EnvelopeMismatch) as info:
        await resolve(
            worker_environ(bootstrapped, bootstrapped.worker_token("acme-prod")),
            [acme("copy", team="default")],
        )
    assert "secret://prod/acme/default/llm/copy" in str(info.value)
    assert CANARY not in str(info.value)


async def test_envelope_copied_from_another_tenant_fails(bootstrapped: Bootstrapped) -> None:
    """globex's envelope written at acme's path: acme's transit key cannot unwrap its data key."""
    seed(bootstrapped, acme("stolen", tenant="globex"), CANARY)
    root = bootstrapped.openbao.client()
    envelope = root.secrets.kv.v2.read_secret_version(
        path=kv_sub(acme("stolen", tenant="globex")), raise_on_deleted_version=True
    )["data"]["data"]
    root.secrets.kv.v2.create_or_update_secret(path=kv_sub(acme("stolen")), secret=envelope)
    with pytest.raises(WrongTransitKey) as info:
        await resolve(worker_environ(bootstrapped, bootstrapped.worker_token("acme-prod")), [acme("stolen")])
    assert "secret://prod/acme/core/llm/stolen" in str(info.value)
    assert "gtc-prod-acme" in str(info.value)
    assert CANARY not in str(info.value)


async def test_plaintext_kv_entry_is_refused(bootstrapped: Bootstrapped) -> None:
    """A raw `kv put` plaintext is refused with the command to re-seed it; the value is not shown."""
    bootstrapped.openbao.client().secrets.kv.v2.create_or_update_secret(
        path=kv_sub(acme("raw")), secret={"value": CANARY}
    )
    with pytest.raises(NotAnEnvelope) as info:
        await resolve(worker_environ(bootstrapped, bootstrapped.worker_token("acme-prod")), [acme("raw")])
    message = str(info.value)
    assert "gtc-secrets put secret://prod/acme/core/llm/raw" in message
    assert "secret/data/greentic/prod/acme/core/llm/raw" in message
    assert CANARY not in message


async def test_missing_and_deleted_secrets_are_hard_errors(bootstrapped: Bootstrapped) -> None:
    """Never start with a missing secret: absent and soft-deleted entries both fail, each named."""
    seed(bootstrapped, acme("deleted"), "v")
    bootstrapped.openbao.client().secrets.kv.v2.delete_latest_version_of_secret(path=kv_sub(acme("deleted")))
    environ = worker_environ(bootstrapped, bootstrapped.worker_token("acme-prod"))
    for ref in (acme("never-seeded"), acme("deleted")):
        with pytest.raises(MissingSecret, match=ref.uri):
            await resolve(environ, [ref])


# ---------------------------------------------------------------------------------------------
# Credentials: only the ServiceAccount token file.
# ---------------------------------------------------------------------------------------------


async def test_ambient_vault_token_is_never_used(
    bootstrapped: Bootstrapped, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """VAULT_TOKEN=<root token> and ~/.vault-token in place: a refused ServiceAccount token still fails,
    and a good one reads as the worker (audit: kubernetes identity, not root)."""
    root_token = bootstrapped.openbao.root_token
    monkeypatch.setenv("VAULT_TOKEN", root_token)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".vault-token").write_text(root_token)
    ref = acme("ambient")
    seed(bootstrapped, ref, "v")

    refused = bootstrapped.worker_token("acme-prod", service_account="default")
    with pytest.raises(Forbidden):
        await resolve(worker_environ(bootstrapped, refused, VAULT_TOKEN=root_token), [ref])

    since = len(bootstrapped.openbao.audit_entries())
    good = bootstrapped.worker_token("acme-prod")
    await resolve(worker_environ(bootstrapped, good, VAULT_TOKEN=root_token), [ref])
    reads = [
        e
        for e in bootstrapped.openbao.audit_entries()[since:]
        if e.get("type") == "request" and e["request"]["path"].startswith(("secret/", "transit/"))
    ]
    assert len(reads) == 2
    for entry in reads:
        assert entry["auth"]["display_name"].startswith("kubernetes-")
        assert entry["auth"]["policies"] == ["gtc-prod-acme"]


async def test_token_for_unbound_namespace_or_wrong_key_is_refused(bootstrapped: Bootstrapped) -> None:
    """gtc-worker of globex-prod logging in as acme's role, and a forged token: refused at login."""
    ref = acme("any")
    for token in (
        bootstrapped.worker_token("globex-prod"),
        bootstrapped.worker_token("acme-prod", wrong_key=True),
        bootstrapped.worker_token("acme-prod", audience="not-vault"),
    ):
        with pytest.raises(Forbidden, match="POST /v1/auth/kubernetes/login: 403"):
            await resolve(worker_environ(bootstrapped, token), [ref])


# ---------------------------------------------------------------------------------------------
# Token lifetime: proactive refresh, expiry and revocation.
# ---------------------------------------------------------------------------------------------


def short_role(bootstrapped: Bootstrapped, ttl: int) -> str:
    """A copy of acme's role whose tokens live ``ttl`` seconds (made with the root client)."""
    root = bootstrapped.openbao.client()
    role = root.read("auth/kubernetes/role/gtc-prod-acme")["data"]
    name = f"gtc-prod-acme-ttl{ttl}"
    root.write_data(
        f"auth/kubernetes/role/{name}",
        data={
            "bound_service_account_names": role["bound_service_account_names"],
            "bound_service_account_namespaces": role["bound_service_account_namespaces"],
            "audience": role["audience"],
            "token_policies": role["token_policies"],
            "token_ttl": ttl,
            "token_max_ttl": ttl,
        },
    )
    return name


def token_is_dead(bootstrapped: Bootstrapped, token: str) -> bool:
    root = bootstrapped.openbao.client()
    try:
        root.auth.token.lookup(token=token)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return True
    return False


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_expired_token_is_replaced_transparently(bootstrapped: Bootstrapped) -> None:
    """A 2 s token really expires in Vault; the next read gets 403, logs in again and succeeds.

    The client's clock is frozen so it does not refresh early: this exercises the 403 path."""
    ref = acme("expiry")
    seed(bootstrapped, ref, "v")
    role = short_role(bootstrapped, ttl=2)
    vault, transport = worker_client(
        bootstrapped, bootstrapped.worker_token("acme-prod"), role=role, clock=lambda: 0.0
    )
    try:
        await resolve_from_vault(vault, [ref])
        first = transport.log[-1][3]
        assert first is not None
        await wait_until(lambda: token_is_dead(bootstrapped, first))
        values = await resolve_from_vault(vault, [ref])
    finally:
        await vault.close()
    assert values[ref].reveal_bytes() == b"v"
    assert vault.logins == 2
    statuses = [(path.split("/")[0], status) for _, path, status, _ in transport.log]
    assert statuses == [
        ("auth", 200), ("secret", 200), ("transit", 200),  # first boot
        ("secret", 403), ("auth", 200), ("secret", 200), ("transit", 200),  # expired -> re-login
    ]  # fmt: skip


async def test_token_is_refreshed_before_it_expires(bootstrapped: Bootstrapped) -> None:
    """With the real clock, a 3 s token is replaced after 2 s, before Vault would refuse it: no 403 at all."""
    ref = acme("refresh")
    seed(bootstrapped, ref, "v")
    role = short_role(bootstrapped, ttl=3)
    vault, transport = worker_client(bootstrapped, bootstrapped.worker_token("acme-prod"), role=role)
    try:
        await resolve_from_vault(vault, [ref])
        started = time.monotonic()
        await wait_until(lambda: time.monotonic() - started >= 2.1)  # past lease (3 s) minus margin (1 s)
        await resolve_from_vault(vault, [ref])
    finally:
        await vault.close()
    assert vault.logins == 2
    assert all(status == 200 for _, _, status, _ in transport.log)


async def test_revoked_token_is_replaced_transparently(bootstrapped: Bootstrapped) -> None:
    """The admin revokes the worker's token: the next read gets 403, logs in again, succeeds."""
    ref = acme("revoked")
    seed(bootstrapped, ref, "v")
    vault, transport = worker_client(bootstrapped, bootstrapped.worker_token("acme-prod"))
    try:
        await resolve_from_vault(vault, [ref])
        token = transport.log[-1][3]
        bootstrapped.openbao.client().auth.token.revoke(token=token)
        values = await resolve_from_vault(vault, [ref])
    finally:
        await vault.close()
    assert values[ref].reveal_bytes() == b"v"
    assert vault.logins == 2
    assert (transport.log[3][2], transport.log[4][1]) == (403, "auth/kubernetes/login")


# ---------------------------------------------------------------------------------------------
# Vault sealed at boot, then unsealed: the boot loop waits for it.
# ---------------------------------------------------------------------------------------------


class _RetrySeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.seen.set()


async def test_sealed_at_boot_then_unsealed_resolves(bootstrapped: Bootstrapped) -> None:
    """Sealed (503) at boot: the worker retries; once unsealed within the boot timeout, it resolves."""
    ref = acme("sealed")
    seed(bootstrapped, ref, CANARY)
    settings = RuntimeSettings.from_environ(
        worker_environ(
            bootstrapped, bootstrapped.worker_token("acme-prod"), GREENTIC_SECRETS_BOOT_TIMEOUT="60"
        )
    )
    assert isinstance(settings.vault, VaultWorkerSettings)
    seen = _RetrySeen()
    logging.getLogger("gtc_secrets").addHandler(seen)
    bootstrapped.openbao.seal()
    try:
        task = asyncio.create_task(VaultBackend(settings.vault, boot_timeout=60).resolve([ref]))
        await wait_until(seen.seen.is_set, timeout=30)
        assert not task.done()
    finally:
        await asyncio.to_thread(bootstrapped.openbao.unseal)
        logging.getLogger("gtc_secrets").removeHandler(seen)
    values = await asyncio.wait_for(task, timeout=60)
    assert values[ref].reveal_bytes() == CANARY.encode()


# ---------------------------------------------------------------------------------------------
# The canary: never in logs, exceptions or CLI error output.
# ---------------------------------------------------------------------------------------------


async def test_canary_never_in_logs_exceptions_or_cli_errors(
    bootstrapped: Bootstrapped, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Success, plaintext entry, copied envelope, forbidden path, via the API and the CLI, at DEBUG (the
    runtime's HTTP client, aiohttp, logging too)."""
    caplog.set_level(logging.DEBUG)
    ok, raw, copy = acme("canary_ok"), acme("canary_raw"), acme("canary_copy")
    seed(bootstrapped, ok, CANARY)
    root = bootstrapped.openbao.client()
    root.secrets.kv.v2.create_or_update_secret(path=kv_sub(raw), secret={"value": CANARY})
    envelope = root.secrets.kv.v2.read_secret_version(path=kv_sub(ok), raise_on_deleted_version=True)["data"][
        "data"
    ]
    root.secrets.kv.v2.create_or_update_secret(path=kv_sub(copy), secret=envelope)
    token = bootstrapped.worker_token("acme-prod")
    environ = worker_environ(bootstrapped, token, GTC_SECRETS_LOG_LEVEL="DEBUG")

    messages: list[str] = []
    values = await resolve(environ, [ok])
    messages.append(repr(values))
    for refs in ([raw], [copy], [ok, raw, copy]):
        with pytest.raises(Exception) as info:  # the message is what is checked
            await resolve(environ, refs)
        messages.append(str(info.value))
        messages.append(repr(info.value))

    def run(argv: list[str], extra: dict[str, str]) -> int:
        return cli.main(argv, {**environ, **extra}, execvpe=lambda *a: None)

    codes = [
        await asyncio.to_thread(run, ["get", copy.uri], {}),
        await asyncio.to_thread(run, ["get", raw.uri], {}),
        await asyncio.to_thread(run, ["exec", "--", "w"], {"A": ok.uri, "B": raw.uri}),
        await asyncio.to_thread(run, ["exec", "--", "w"], {"A": ok.uri}),
    ]
    assert codes == [1, 1, 1, 0]
    out, err = capfd.readouterr()
    assert "does not decrypt for this path" in err
    assert "not a gtc-secrets envelope" in err
    assert caplog.records
    for text in [*messages, caplog.text, out, err, bootstrapped.openbao.log_file.read_text()]:
        assert CANARY not in text


# ---------------------------------------------------------------------------------------------
# Plain-http Vault: only with GREENTIC_VAULT_INSECURE_HTTP=true, announced at every boot.
# ---------------------------------------------------------------------------------------------


def plain_http_environ(bootstrapped: Bootstrapped, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A worker pod's environment as the webhook injects it for an environment with vault.insecureHttp."""
    environ = {
        **base_environ(tmp_path),
        **worker_environ(bootstrapped, bootstrapped.worker_token("acme-prod"), **extra),
        "VAULT_ADDR": bootstrapped.openbao.server.http_addr,
        "GREENTIC_VAULT_INSECURE_HTTP": "true",
    }
    del environ["VAULT_CACERT"]
    return environ


def test_a_worker_boots_against_plain_http_vault_with_the_flag(
    bootstrapped: Bootstrapped, tmp_path: Path
) -> None:
    """`gtc-secrets exec` and `get` (the console script) against OpenBao's plain-http listener: the value
    reaches the child, every boot warns that the token travels unencrypted (naming the address only), and
    the value is never printed."""
    ref = acme("plain_http")
    seed(bootstrapped, ref, CANARY)
    environ = plain_http_environ(bootstrapped, tmp_path, OPENAI_API_KEY="secret://llm/plain_http")
    since = len(bootstrapped.openbao.audit_entries())
    dump = tmp_path / "child.json"

    first = run_exec(environ, dump)
    second = run_exec(environ, tmp_path / "again.json")
    got = subprocess.run(
        [str(GTC_SECRETS), "get", "secret://llm/plain_http"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert (first.returncode, second.returncode, got.returncode) == (0, 0, 0), first.stderr + got.stderr
    assert json.loads(dump.read_text())["env"]["OPENAI_API_KEY"] == CANARY
    assert got.stdout == CANARY
    warning = (
        f"WARNING gtc_secrets.backends: VAULT_ADDR {bootstrapped.openbao.server.http_addr} is plain http "
        "(GREENTIC_VAULT_INSECURE_HTTP=true): the ServiceAccount token"
    )
    for result in (first, second, got):
        assert result.stderr.count(warning) == 1, result.stderr
        assert CANARY not in result.stderr
    assert CANARY not in first.stdout + second.stdout
    logins = audit_requests(bootstrapped, since=since, namespace="acme-prod")
    assert [p for _, p in logins].count("auth/kubernetes/login") == 3


@pytest.mark.parametrize("flag", [None, "false", "yes"])
def test_plain_http_without_the_flag_is_refused_before_any_io(
    bootstrapped: Bootstrapped, tmp_path: Path, flag: str | None
) -> None:
    """The same worker without GREENTIC_VAULT_INSECURE_HTTP=true (unset, false, or not a boolean): exit 3
    naming the variable, the child never runs, and Vault and the TokenReview stand-in saw nothing."""
    ref = acme("plain_http_refused")
    seed(bootstrapped, ref, CANARY)
    environ = plain_http_environ(bootstrapped, tmp_path, A="secret://llm/plain_http_refused")
    if flag is None:
        del environ["GREENTIC_VAULT_INSECURE_HTTP"]
    else:
        environ["GREENTIC_VAULT_INSECURE_HTTP"] = flag
    since, reviews = len(bootstrapped.openbao.audit_entries()), bootstrapped.reviewer.reviews
    dump = tmp_path / "child.json"

    result = run_exec(environ, dump)

    assert result.returncode == 3, result.stderr
    assert "GREENTIC_VAULT_INSECURE_HTTP" in result.stderr
    assert not dump.exists()
    assert bootstrapped.openbao.audit_entries()[since:] == []
    assert bootstrapped.reviewer.reviews == reviews
    assert CANARY not in result.stdout + result.stderr


def test_bootstrap_follows_the_same_rule_for_a_plain_http_vault(
    bootstrapped: Bootstrapped, tmp_path: Path
) -> None:
    """An operator can bootstrap a plain-http Vault only with GREENTIC_VAULT_INSECURE_HTTP=true: then the
    console script works (a second run changes nothing) and warns that the admin token travels unencrypted;
    without it, exit 2 naming the variable and nothing reaches Vault."""
    openbao = bootstrapped.openbao
    http_addr = openbao.server.http_addr
    admin = {**openbao.admin_environ(), "VAULT_ADDR": http_addr}
    del admin["VAULT_CACERT"]
    args = bootstrap_args(ENV, "acme", [TENANTS["acme"]], bootstrapped.reviewer, tmp_path / "files")

    def bootstrap(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GTC_SECRETS), "bootstrap", *args],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **environ},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    since = len(openbao.audit_entries())
    refused = bootstrap(admin)
    assert refused.returncode == 2, refused.stderr
    assert "GREENTIC_VAULT_INSECURE_HTTP=true" in refused.stderr
    assert openbao.audit_entries()[since:] == []

    done = bootstrap({**admin, "GREENTIC_VAULT_INSECURE_HTTP": "true"})
    assert done.returncode == 0, done.stderr
    assert "nothing to change" in done.stdout
    assert f"VAULT_ADDR {http_addr} is plain http" in done.stderr
    assert openbao.root_token not in done.stdout + done.stderr + refused.stderr
