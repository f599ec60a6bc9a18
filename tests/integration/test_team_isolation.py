"""Team isolation is Vault's: per-team roles from ``gtc-secrets bootstrap --team`` against a real OpenBao.

Tenant ``acme`` gets three team roles (``core`` in namespace acme-core, ``billing`` in acme-billing, and
the shared team ``default`` in acme-shared) on top of the fixture's tenant-wide role (acme-prod). One
envelope is seeded per team with ``put_secret`` (what ``gtc-secrets put`` does). Vault's Kubernetes auth
asks the TokenReview stand-in (tests/support/token_review.py), which verifies the ServiceAccount JWTs.

The proof that a ``core`` worker cannot read ``billing`` is Vault's 403 to the very token the worker logs
in with, asked directly over HTTP: the runtime's own scope check is only a clearer error in front of it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gtc_secrets import cli
from gtc_secrets.refs import SecretRef
from gtc_secrets.seed import HvacAdminVault, put_secret
from gtc_secrets.settings import AdminSettings
from tests.integration.conftest import ENV, Bootstrapped, OpenBao, bootstrap_args, run_bootstrap

pytestmark = pytest.mark.integration

TEAM_NAMESPACES = {"core": "acme-core", "billing": "acme-billing", "default": "acme-shared"}
REFS = {team: SecretRef(ENV, "acme", team, "webhook", "inbound") for team in TEAM_NAMESPACES}


@dataclass(frozen=True)
class Teams:
    bootstrapped: Bootstrapped
    # The seeded values' SHA-256 only: a test compares hashes, so no value can reach a report.
    digests: dict[str, str]

    @property
    def openbao(self) -> OpenBao:
        return self.bootstrapped.openbao

    def worker_environ(self, team: str, token_file: Path, **extra: str) -> dict[str, str]:
        """What the webhook injects into a pod of ``team`` with the example config's per-team roles."""
        return {
            "GREENTIC_SECRETS_BACKEND": "vault",
            "VAULT_ADDR": self.openbao.addr,
            "VAULT_CACERT": self.openbao.ca_file,
            "VAULT_K8S_ROLE": f"gtc-{ENV}-acme-{team}",
            "VAULT_K8S_TOKEN_PATH": str(token_file),
            "GREENTIC_ENV": ENV,
            "GREENTIC_TENANT": "acme",
            "GREENTIC_TEAM": team,
            **extra,
        }


@pytest.fixture(scope="module")
def teams(bootstrapped: Bootstrapped, tmp_path_factory: pytest.TempPathFactory) -> Teams:
    flags = [arg for team, ns in TEAM_NAMESPACES.items() for arg in ("--team", f"{team}={ns}")]
    argv = bootstrap_args(ENV, "acme", [], bootstrapped.reviewer, tmp_path_factory.mktemp("teams"), *flags)
    code, out, err = run_bootstrap(argv, bootstrapped.openbao.admin_environ())
    if code != 0:
        pytest.fail(f"bootstrap --team failed with exit code {code}:\n{out}{err}")
    settings = AdminSettings.from_environ(bootstrapped.openbao.admin_environ())
    digests: dict[str, str] = {}
    for team, ref in REFS.items():
        value = f"{team}-{secrets.token_hex(16)}".encode()
        put_secret(HvacAdminVault(settings), settings, ref, value)
        digests[team] = hashlib.sha256(value).hexdigest()
    return Teams(bootstrapped=bootstrapped, digests=digests)


def vault_http(
    openbao: OpenBao, method: str, path: str, *, token: str | None = None, body: Any = None
) -> tuple[int, dict[str, Any]]:
    """One plain HTTP call to Vault's API (urllib, the server's CA): status and JSON body."""
    request = urllib.request.Request(
        f"{openbao.addr}/v1/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    if token is not None:
        request.add_header("X-Vault-Token", token)
    context = ssl.create_default_context(cafile=openbao.ca_file)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return int(answer.status), json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), json.loads(error.read() or b"{}")


def login_over_http(teams: Teams, namespace: str, role: str) -> str:
    """POST auth/kubernetes/login as the worker does, with its ServiceAccount JWT: the Vault token."""
    jwt = teams.bootstrapped.reviewer.sign(namespace, "gtc-worker")
    status, answer = vault_http(
        teams.openbao, "POST", "auth/kubernetes/login", body={"role": role, "jwt": jwt}
    )
    assert status == 200, answer.get("errors")
    token: str = answer["auth"]["client_token"]
    return token


def kv_data_path(ref: SecretRef) -> str:
    return f"secret/data/greentic/{ref.logical_path}"


def get(
    teams: Teams, environ: dict[str, str], ref: str, capfd: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``gtc-secrets get REF`` as the worker runs it: exit code, SHA-256 of stdout, stderr."""
    capfd.readouterr()
    code = cli.main(["get", ref], environ)
    out, err = capfd.readouterr()
    return code, hashlib.sha256(out.encode()).hexdigest(), err


def test_a_core_token_reads_core_and_default_and_gets_403_for_billing(teams: Teams) -> None:
    """One Vault token of the core role, directly over HTTP: core and default answer 200, billing 403."""
    token = login_over_http(teams, "acme-core", "gtc-prod-acme-core")

    answers = {
        team: vault_http(teams.openbao, "GET", kv_data_path(ref), token=token) for team, ref in REFS.items()
    }

    assert answers["core"][0] == 200
    assert set(answers["core"][1]["data"]["data"]) == {
        "gtc_envelope",
        "alg",
        "wrapped_key",
        "nonce",
        "ciphertext",
    }
    assert answers["default"][0] == 200
    assert answers["billing"][0] == 403
    assert "permission denied" in str(answers["billing"][1]["errors"])
    assert "data" not in answers["billing"][1]
    # Nor billing's metadata, nor a list of the tenant's teams.
    assert (
        vault_http(
            teams.openbao, "GET", "secret/metadata/greentic/prod/acme/billing/webhook/inbound", token=token
        )[0]
        == 403
    )
    assert vault_http(teams.openbao, "LIST", "secret/metadata/greentic/prod/acme", token=token)[0] == 403
    # Its own metadata (versions, no value) it may read.
    assert (
        vault_http(
            teams.openbao, "GET", "secret/metadata/greentic/prod/acme/core/webhook/inbound", token=token
        )[0]
        == 200
    )


def test_the_core_worker_resolves_its_own_and_the_shared_teams_secrets(
    teams: Teams, capfd: pytest.CaptureFixture[str]
) -> None:
    """The runtime on the core role: the short form (own team) and the long form of the shared team."""
    environ = teams.worker_environ("core", teams.bootstrapped.worker_token("acme-core"))
    for ref, team in (("secret://webhook/inbound", "core"), (REFS["default"].uri, "default")):
        code, digest, err = get(teams, environ, ref, capfd)
        assert code == cli.EXIT_OK, err
        assert digest == teams.digests[team]


def test_the_runtime_refuses_another_team_before_any_request(
    teams: Teams, capfd: pytest.CaptureFixture[str]
) -> None:
    """A core worker naming billing's secret: exit 1 with a clear error, and Vault sees no request at all."""
    environ = teams.worker_environ("core", teams.bootstrapped.worker_token("acme-core"))
    audit_start = len(teams.openbao.audit_entries())

    code, _, err = get(teams, environ, REFS["billing"].uri, capfd)

    assert code == cli.EXIT_RESOLVE
    assert "team 'billing' is outside the worker's team 'core' and the shared team 'default'" in err
    assert teams.openbao.audit_entries()[audit_start:] == []


def test_a_worker_that_lies_about_its_team_still_gets_403_from_vault(
    teams: Teams, capfd: pytest.CaptureFixture[str]
) -> None:
    """GREENTIC_TEAM=billing passes the runtime's check, but the core role's token is refused by Vault."""
    token = teams.bootstrapped.worker_token("acme-core")
    environ = {**teams.worker_environ("billing", token), "VAULT_K8S_ROLE": "gtc-prod-acme-core"}

    code, digest, err = get(teams, environ, "secret://webhook/inbound", capfd)

    assert code == cli.EXIT_RESOLVE
    assert "secret/data/greentic/prod/acme/billing/webhook/inbound: 403" in err
    assert digest != teams.digests["billing"]
    # And billing's role does not take a token of core's namespace.
    jwt = teams.bootstrapped.reviewer.sign("acme-core", "gtc-worker")
    status, _ = vault_http(
        teams.openbao, "POST", "auth/kubernetes/login", body={"role": "gtc-prod-acme-billing", "jwt": jwt}
    )
    assert status == 403


def test_the_tenant_wide_role_still_reads_every_team(teams: Teams, capfd: pytest.CaptureFixture[str]) -> None:
    """Existing installs keep working: gtc-prod-acme (acme-prod) reads core and billing alike."""
    token = login_over_http(teams, "acme-prod", "gtc-prod-acme")
    for ref in REFS.values():
        assert vault_http(teams.openbao, "GET", kv_data_path(ref), token=token)[0] == 200
    environ = {
        **teams.worker_environ("billing", teams.bootstrapped.worker_token("acme-prod")),
        "VAULT_K8S_ROLE": "gtc-prod-acme",
    }
    code, digest, err = get(teams, environ, "secret://webhook/inbound", capfd)
    assert code == cli.EXIT_OK, err
    assert digest == teams.digests["billing"]
