"""Fixtures of the integration tests: a real OpenBao server, a TokenReview stand-in, a bootstrapped Vault.

- ``openbao``: ``bao server -dev`` on 127.0.0.1 with real TLS, a file audit device and a known root
  token (module-scoped: one server per test module, with a plain-http listener too in a module that sets
  ``OPENBAO_PLAIN_HTTP = True``; it keeps its data across ``stop``/``start``/
  ``restart``/``seal``/``unseal``, and a test that stops or seals it must bring it back in ``finally``).
- ``token_reviewer``: an HTTPS endpoint that STANDS IN FOR THE KUBERNETES API SERVER's TokenReview API and
  nothing else (there is no Kubernetes here); it really verifies the ServiceAccount JWTs it is asked about.
- ``bootstrapped``: ``gtc-secrets bootstrap`` run for env ``prod``, tenants ``acme`` (namespace
  ``acme-prod``) and ``globex`` (namespace ``globex-prod``), with Kubernetes auth pointed at the stand-in.

Every fixture stops what it starts, in ``finally``. When a test that uses the server fails, the tail of
the server log is attached to the report.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest

from gtc_secrets import bootstrap
from tests.support.openbao import OpenBaoServer
from tests.support.token_review import TokenReviewServer

ENV = "prod"
TENANTS = {"acme": "acme-prod", "globex": "globex-prod"}
WORKER_SERVICE_ACCOUNT = bootstrap.DEFAULT_SERVICE_ACCOUNT
AUDIENCE = bootstrap.DEFAULT_AUDIENCE


@dataclass
class OpenBao:
    """A running OpenBao server: HTTPS at ``addr``, CA in ``ca_file``, admin via ``root_token``."""

    addr: str
    ca_file: str
    root_token: str
    audit_log: Path
    log_file: Path
    server: OpenBaoServer = field(repr=False)
    _clients: list[hvac.Client] = field(default_factory=list, repr=False)

    def client(self, token: str | None = None) -> hvac.Client:
        """A client verifying the server's CA, with the root token unless ``token`` is given
        (``token=""`` for none). Closed when the fixture ends."""
        client = hvac.Client(
            url=self.addr, token=self.root_token if token is None else token, verify=self.ca_file
        )
        self._clients.append(client)
        return client

    def admin_environ(self) -> dict[str, str]:
        """VAULT_ADDR / VAULT_TOKEN / VAULT_CACERT for an operator command (``put``, ``bootstrap``)."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.root_token, "VAULT_CACERT": self.ca_file}

    def stop(self) -> None:
        self.server.stop()

    def start(self, *, unseal: bool = True) -> None:
        self.server.start(unseal=unseal)

    def restart(self, *, unseal: bool = True) -> None:
        self.server.restart(unseal=unseal)

    def seal(self) -> None:
        self.server.seal()

    def unseal(self) -> None:
        self.server.unseal()

    def audit_entries(self) -> list[dict[str, Any]]:
        """Parsed lines of the file audit device.

        Values in ``request.data`` and tokens are HMAC'd ("hmac-sha256:..."); ``type``, ``request.path``,
        ``request.operation``, ``request.mount_type``, ``auth.display_name``, ``auth.policies`` and
        ``auth.metadata`` (role, service_account_name, service_account_namespace) are plain text.
        """
        return self.server.audit_entries()

    def close_clients(self) -> None:
        for client in self._clients:
            client.adapter.close()
        self._clients.clear()


@dataclass
class TokenReviewer:
    """The TokenReview stand-in (NOT a Kubernetes API server: only ``POST .../tokenreviews``)."""

    url: str
    ca_pem: str
    ca_file: str
    reviewer_jwt: str = field(repr=False)
    server: TokenReviewServer = field(repr=False)

    @property
    def reviews(self) -> int:
        """TokenReviews answered so far (Vault calls it on every login that passes its own checks)."""
        return self.server.reviews

    @property
    def authenticated_reviews(self) -> int:
        return self.server.authenticated_reviews

    def sign(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str = AUDIENCE,
        ttl_seconds: int = 600,
        wrong_key: bool = False,
    ) -> str:
        """A projected ServiceAccount token; ``wrong_key=True`` signs with a key the stand-in refuses."""
        key = self.server.wrong_key if wrong_key else None
        return self.server.sign(
            namespace, service_account, audience=audience, ttl_seconds=ttl_seconds, key=key
        )


@dataclass
class Bootstrapped:
    """OpenBao bootstrapped for env prod, tenants acme/globex; ``output`` is what bootstrap printed."""

    openbao: OpenBao
    reviewer: TokenReviewer
    token_dir: Path
    output: dict[str, str]
    env: str = ENV
    tenants: dict[str, str] = field(default_factory=lambda: dict(TENANTS))

    def worker_token(
        self,
        namespace: str = "acme-prod",
        service_account: str = WORKER_SERVICE_ACCOUNT,
        *,
        audience: str = AUDIENCE,
        ttl_seconds: int = 600,
        wrong_key: bool = False,
    ) -> Path:
        """Write a signed ServiceAccount token to a new file (like the kubelet's projected volume)."""
        token = self.reviewer.sign(
            namespace, service_account, audience=audience, ttl_seconds=ttl_seconds, wrong_key=wrong_key
        )
        fd, name = tempfile.mkstemp(
            prefix=f"{namespace}-{service_account}-", suffix=".jwt", dir=self.token_dir
        )
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token)
        return Path(name)


def bootstrap_args(
    env: str,
    tenant: str,
    namespaces: list[str],
    reviewer: TokenReviewer,
    files_dir: Path,
    *extra: str,
) -> list[str]:
    """``bootstrap`` arguments pointing Kubernetes auth at the stand-in (files go to ``files_dir``)."""
    files_dir.mkdir(parents=True, exist_ok=True)
    jwt_file = files_dir / "token-reviewer.jwt"
    jwt_file.write_text(reviewer.reviewer_jwt, encoding="ascii")
    args = ["--env", env, "--tenant", tenant]
    for namespace in namespaces:
        args += ["--namespace", namespace]
    return [
        *args,
        "--kubernetes-host",
        reviewer.url,
        "--kubernetes-ca",
        reviewer.ca_file,
        "--token-reviewer-jwt",
        str(jwt_file),
        *extra,
    ]


def run_bootstrap(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """Run ``gtc-secrets bootstrap`` in-process: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="gtc-secrets")
    bootstrap.register(parser.add_subparsers(dest="subcommand", required=True), environ=environ)
    args = parser.parse_args([bootstrap.COMMAND, *argv])
    out, err = io.StringIO(), io.StringIO()
    code = bootstrap.command(args, environ, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openbao(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    # A module that sets OPENBAO_PLAIN_HTTP = True gets a plain-http listener too (server.http_addr).
    plain_http = bool(getattr(request.module, "OPENBAO_PLAIN_HTTP", False))
    server = OpenBaoServer(tmp_path_factory.mktemp("openbao"), plain_http=plain_http)
    handle: OpenBao | None = None
    try:
        server.start()
        handle = OpenBao(
            addr=server.addr,
            ca_file=str(server.ca_file),
            root_token=server.root_token,
            audit_log=server.audit_log,
            log_file=server.log_file,
            server=server,
        )
        yield handle
    finally:
        if handle is not None:
            handle.close_clients()
        server.stop()


@pytest.fixture(scope="module")
def token_reviewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenReviewer]:
    server = TokenReviewServer(tmp_path_factory.mktemp("token-review"))
    try:
        server.start()
        yield TokenReviewer(
            url=server.url,
            ca_pem=server.ca_pem,
            ca_file=str(server.ca_file),
            reviewer_jwt=server.reviewer_jwt,
            server=server,
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bootstrapped(
    openbao: OpenBao, token_reviewer: TokenReviewer, tmp_path_factory: pytest.TempPathFactory
) -> Bootstrapped:
    files = tmp_path_factory.mktemp("bootstrap")
    output: dict[str, str] = {}
    for tenant, namespace in TENANTS.items():
        code, out, err = run_bootstrap(
            bootstrap_args(ENV, tenant, [namespace], token_reviewer, files), openbao.admin_environ()
        )
        if code != 0:
            pytest.fail(f"bootstrap of {ENV}/{tenant} failed with exit code {code}:\n{out}{err}")
        output[tenant] = out
    return Bootstrapped(
        openbao=openbao,
        reviewer=token_reviewer,
        token_dir=tmp_path_factory.mktemp("worker-tokens"),
        output=output,
    )


# --- the server log on failure -------------------------------------------------------------------------


def _openbao_server(value: object) -> OpenBaoServer | None:
    if isinstance(value, Bootstrapped):
        value = value.openbao
    return value.server if isinstance(value, OpenBao) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs: dict[str, object] = getattr(item, "funcargs", {})
        for value in funcargs.values():
            server = _openbao_server(value)
            if server is not None:
                report.sections.append((f"OpenBao log ({server.log_file})", server.log_tail()))
                break
    return report
