"""``gtc-secrets bootstrap`` against a real OpenBao (real TLS, file audit device).

Kubernetes auth is pointed at ``token_reviewer``, an HTTPS endpoint that STANDS IN FOR THE KUBERNETES API
SERVER's TokenReview API and nothing else: there is no cluster here. It really verifies the ServiceAccount
JWTs OpenBao asks about (signature, expiry, issuer, audience), so a login that succeeds went through a real
TokenReview call, and ``token_reviewer.reviews`` proves OpenBao made it.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from gtc_secrets import bootstrap
from tests.integration.conftest import (
    ENV,
    Bootstrapped,
    OpenBao,
    TokenReviewer,
    bootstrap_args,
    run_bootstrap,
)
from tests.support.token_review import API_SERVER_AUDIENCE, REVIEW_PATH

pytestmark = pytest.mark.integration

ACME_ROLE = "gtc-prod-acme"


# --- helpers ----------------------------------------------------------------------------------------------


def vault_state(client: hvac.Client, name: str = ACME_ROLE) -> dict[str, Any]:
    """What bootstrap manages, as Vault reports it (for before/after comparisons)."""

    def data(path: str) -> Any:
        answer = client.read(path)
        return None if answer is None else answer["data"]

    mounts = data("sys/mounts")
    key = data(f"transit/keys/{name}")
    policy = data(f"sys/policies/acl/{name}")
    return {
        "auth": {k: v["type"] for k, v in data("sys/auth").items()},
        "mounts": {k: (v["type"], (v.get("options") or {}).get("version")) for k, v in mounts.items()},
        "config": data("auth/kubernetes/config"),
        "role": data(f"auth/kubernetes/role/{name}"),
        "policy": None if policy is None else policy["policy"],
        "key": None
        if key is None
        else {
            k: key[k]
            for k in ("type", "exportable", "deletion_allowed", "allow_plaintext_backup", "latest_version")
        },
    }


def writes_since(openbao: OpenBao, start: int) -> list[tuple[str, str]]:
    """(operation, path) of every non-read request the audit log recorded after entry ``start``."""
    return [
        (entry["request"]["operation"], entry["request"]["path"])
        for entry in openbao.audit_entries()[start:]
        if entry["type"] == "request" and entry["request"]["operation"] not in ("read", "list")
    ]


def login(openbao: OpenBao, jwt: str, role: str = ACME_ROLE) -> dict[str, Any]:
    """POST auth/kubernetes/login as a worker would (no token of its own)."""
    answer: dict[str, Any] = openbao.client(token="").auth.kubernetes.login(role, jwt, use_token=False)
    return answer


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path / "bootstrap-files"


def assert_no_credentials(text: str, openbao: OpenBao, reviewer: TokenReviewer) -> None:
    assert openbao.root_token not in text
    assert reviewer.reviewer_jwt not in text


# --- idempotency ------------------------------------------------------------------------------------------


def test_first_run_reports_what_it_created(bootstrapped: Bootstrapped) -> None:
    """The fixture's first run created the auth method, transit, the key, the policy, the config, the role."""
    out = bootstrapped.output["acme"]
    for line in (
        "created auth method kubernetes/ (kubernetes)",
        # dev mode mounts KV v2 at secret/ itself, so there is nothing to create there.
        "unchanged: secrets engine secret/ (kv-v2)",
        "created secrets engine transit/ (transit)",
        "created transit key transit/keys/gtc-prod-acme",
        "created policy gtc-prod-acme",
        "created auth/kubernetes/config",
        "created role gtc-prod-acme (auth/kubernetes)",
        "bootstrapped env prod, tenant acme: 6 change(s)",
    ):
        assert line in out
    # The second tenant shares the mounts and the auth config.
    assert "unchanged: auth method kubernetes/" in bootstrapped.output["globex"]
    assert "created policy gtc-prod-globex" in bootstrapped.output["globex"]
    for text in bootstrapped.output.values():
        assert_no_credentials(text, bootstrapped.openbao, bootstrapped.reviewer)


def test_second_run_changes_nothing(bootstrapped: Bootstrapped, files: Path) -> None:
    """The same command again: every step 'unchanged', no write in the audit log, same Vault state."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    root = openbao.client()
    before = vault_state(root)
    audit_start = len(openbao.audit_entries())

    code, out, err = run_bootstrap(
        bootstrap_args(ENV, "acme", ["acme-prod"], reviewer, files), openbao.admin_environ()
    )

    assert (code, err) == (0, "")
    lines = out.strip().splitlines()
    assert all(line.startswith("unchanged: ") for line in lines[:-1]), out
    assert lines[-1] == "nothing to change: Vault is already bootstrapped for env prod, tenant acme"
    assert "token_reviewer_jwt is set; Vault never returns it" in out
    assert writes_since(openbao, audit_start) == []
    assert vault_state(root) == before
    assert_no_credentials(out, openbao, reviewer)


def test_second_run_through_the_console_script(
    bootstrapped: Bootstrapped, files: Path, tmp_path: Path
) -> None:
    """`gtc-secrets bootstrap` (the installed console script) finds nothing to change either."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    script = Path(sys.executable).parent / "gtc-secrets"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **openbao.admin_environ()}
    result = subprocess.run(
        [str(script), "bootstrap", *bootstrap_args(ENV, "globex", ["globex-prod"], reviewer, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to change: Vault is already bootstrapped for env prod, tenant globex" in result.stdout
    assert_no_credentials(result.stdout + result.stderr, openbao, reviewer)


def test_dry_run_changes_nothing(bootstrapped: Bootstrapped, files: Path) -> None:
    """--dry-run for a new tenant and for a widened one prints 'would ...' and writes nothing."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    root = openbao.client()
    acme_before = vault_state(root)
    audit_start = len(openbao.audit_entries())

    code, out, err = run_bootstrap(
        bootstrap_args(ENV, "initech", ["initech-prod"], reviewer, files, "--dry-run"),
        openbao.admin_environ(),
    )
    assert (code, err) == (0, "")
    assert "would create transit key transit/keys/gtc-prod-initech" in out
    assert "would create policy gtc-prod-initech" in out
    assert "would create role gtc-prod-initech (auth/kubernetes)" in out
    assert "dry run: 3 change(s) for env prod, tenant initech not applied" in out

    code, out, err = run_bootstrap(
        bootstrap_args(ENV, "acme", ["acme-prod", "acme-canary"], reviewer, files, "--dry-run"),
        openbao.admin_environ(),
    )
    assert (code, err) == (0, "")
    assert "would update role gtc-prod-acme (auth/kubernetes) (bound_service_account_namespaces)" in out

    assert writes_since(openbao, audit_start) == []
    assert vault_state(root, "gtc-prod-initech")["policy"] is None
    assert vault_state(root, "gtc-prod-initech")["role"] is None
    assert vault_state(root, "gtc-prod-initech")["key"] is None
    assert vault_state(root) == acme_before


def test_drift_is_repaired_and_reported(bootstrapped: Bootstrapped, files: Path) -> None:
    """A widened policy and an extra namespace on the role are put back, and the output names them."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    root = openbao.client()
    before = vault_state(root)
    root.sys.create_or_update_acl_policy(
        ACME_ROLE, before["policy"] + '\npath "secret/metadata/*" {\n  capabilities = ["list"]\n}\n'
    )
    root.write_data(
        f"auth/kubernetes/role/{ACME_ROLE}", data={"bound_service_account_namespaces": ["acme-prod", "x"]}
    )

    code, out, err = run_bootstrap(
        bootstrap_args(ENV, "acme", ["acme-prod"], reviewer, files), openbao.admin_environ()
    )

    assert (code, err) == (0, "")
    assert "updated policy gtc-prod-acme (rules differ from the read-only tenant policy)" in out
    assert "updated role gtc-prod-acme (auth/kubernetes) (bound_service_account_namespaces)" in out
    assert "bootstrapped env prod, tenant acme: 2 change(s)" in out
    assert vault_state(root) == before


# --- per-team roles (--team) ----------------------------------------------------------------------------

TEAM_FLAGS = ["--team", "core=acme-core", "--team", "billing=acme-billing,acme-billing-eu"]


def team_args(reviewer: TokenReviewer, files: Path, *extra: str) -> list[str]:
    return bootstrap_args(ENV, "acme", [], reviewer, files, *TEAM_FLAGS, *extra)


@pytest.fixture(scope="module")
def team_output(bootstrapped: Bootstrapped, tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the first ``bootstrap --team`` printed (on top of the tenant-wide fixture)."""
    files = tmp_path_factory.mktemp("team-bootstrap")
    code, out, err = run_bootstrap(
        team_args(bootstrapped.reviewer, files), bootstrapped.openbao.admin_environ()
    )
    assert (code, err) == (0, "")
    return out


def test_team_roles_are_created_then_a_second_run_changes_nothing(
    bootstrapped: Bootstrapped, team_output: str, files: Path
) -> None:
    """--team twice: created per-team policies and roles, then only 'unchanged' and no write at all."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    for line in (
        "created policy gtc-prod-acme-billing",
        "created policy gtc-prod-acme-core",
        "created role gtc-prod-acme-billing (auth/kubernetes)",
        "created role gtc-prod-acme-core (auth/kubernetes)",
        # The fixture's tenant-wide role is left alone, and said to still read every team.
        "unchanged: role gtc-prod-acme (auth/kubernetes) (tenant-wide: workers of its namespaces can still "
        "read every team",
        "bootstrapped env prod, tenant acme, teams billing, core: 4 change(s)",
    ):
        assert line in team_output
    root = openbao.client()
    before = {team: vault_state(root, f"gtc-prod-acme-{team}") for team in ("core", "billing")}
    assert before["billing"]["role"]["bound_service_account_namespaces"] == [
        "acme-billing",
        "acme-billing-eu",
    ]
    audit_start = len(openbao.audit_entries())

    code, out, err = run_bootstrap(team_args(reviewer, files), openbao.admin_environ())

    assert (code, err) == (0, "")
    assert all(line.startswith("unchanged: ") for line in out.strip().splitlines()[:-1]), out
    assert out.strip().endswith(
        "nothing to change: Vault is already bootstrapped for env prod, tenant acme, teams billing, core"
    )
    assert writes_since(openbao, audit_start) == []
    assert {team: vault_state(root, f"gtc-prod-acme-{team}") for team in ("core", "billing")} == before
    assert_no_credentials(out, openbao, reviewer)


def test_team_drift_is_repaired_and_reported(
    bootstrapped: Bootstrapped, team_output: str, files: Path
) -> None:
    """core's policy widened to billing and its role bound to billing's namespace: both put back."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    root = openbao.client()
    before = vault_state(root, "gtc-prod-acme-core")
    root.sys.create_or_update_acl_policy(
        "gtc-prod-acme-core",
        before["policy"]
        + '\npath "secret/data/greentic/prod/acme/billing/*" {\n  capabilities = ["read"]\n}\n',
    )
    root.write_data(
        "auth/kubernetes/role/gtc-prod-acme-core", data={"bound_service_account_namespaces": ["acme-billing"]}
    )

    code, out, err = run_bootstrap(team_args(reviewer, files), openbao.admin_environ())

    assert (code, err) == (0, "")
    assert "updated policy gtc-prod-acme-core (rules differ from the read-only team policy)" in out
    assert "updated role gtc-prod-acme-core (auth/kubernetes) (bound_service_account_namespaces)" in out
    assert "bootstrapped env prod, tenant acme, teams billing, core: 2 change(s)" in out
    assert vault_state(root, "gtc-prod-acme-core") == before


def test_a_team_worker_logs_in_with_exactly_its_team_policy(
    bootstrapped: Bootstrapped, team_output: str
) -> None:
    """gtc-worker of acme-core gets gtc-prod-acme-core only; it cannot take billing's role or the tenant's."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    jwt = reviewer.sign("acme-core", "gtc-worker")

    auth = login(openbao, jwt, "gtc-prod-acme-core")["auth"]

    assert auth["policies"] == auth["token_policies"] == ["gtc-prod-acme-core"]
    assert auth["metadata"]["service_account_namespace"] == "acme-core"
    for role in ("gtc-prod-acme-billing", ACME_ROLE):
        with pytest.raises(hvac.exceptions.Forbidden):
            login(openbao, jwt, role)


# --- the auth config keeps what it cannot read ----------------------------------------------------------


def test_a_config_change_without_the_reviewer_jwt_is_refused_and_vault_is_untouched(
    bootstrapped: Bootstrapped, files: Path
) -> None:
    """Changing the host would rewrite the config and silently drop the reviewer JWT: exit 1 instead."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    root = openbao.client()
    before = vault_state(root)
    audit_start = len(openbao.audit_entries())
    argv = [
        "--env",
        ENV,
        "--tenant",
        "acme",
        "--namespace",
        "acme-prod",
        "--kubernetes-host",
        "https://127.0.0.1:1",
    ]

    code, out, err = run_bootstrap(argv, openbao.admin_environ())

    assert code == bootstrap.EXIT_FAILED
    assert "would be dropped. Pass --token-reviewer-jwt FILE again" in err
    assert writes_since(openbao, audit_start) == []
    assert vault_state(root) == before
    assert before["config"]["token_reviewer_jwt_set"] is True
    # And logins still go through the reviewer with the kept JWT.
    assert login(openbao, reviewer.sign("acme-prod", "gtc-worker"))["auth"]["policies"] == [ACME_ROLE]
    assert_no_credentials(out + err, openbao, reviewer)


def test_replace_token_reviewer_jwt_writes_it(bootstrapped: Bootstrapped, files: Path) -> None:
    """--replace-token-reviewer-jwt rewrites the config with the given JWT; logins keep working."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    code, out, err = run_bootstrap(
        bootstrap_args(ENV, "acme", ["acme-prod"], reviewer, files, "--replace-token-reviewer-jwt"),
        openbao.admin_environ(),
    )
    assert (code, err) == (0, "")
    assert "updated auth/kubernetes/config (token_reviewer_jwt replaced)" in out
    assert login(openbao, reviewer.sign("acme-prod", "gtc-worker"))["auth"]["policies"] == [ACME_ROLE]
    assert_no_credentials(out, openbao, reviewer)


# --- logins ----------------------------------------------------------------------------------------------


def test_the_worker_logs_in_with_exactly_the_tenant_policy(bootstrapped: Bootstrapped) -> None:
    """gtc-worker in acme-prod logs in through a real TokenReview and gets only gtc-prod-acme, 15 min."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    reviews, authenticated = reviewer.reviews, reviewer.authenticated_reviews

    auth = login(openbao, bootstrapped.worker_token().read_text())["auth"]

    assert auth["policies"] == [ACME_ROLE]
    assert auth["token_policies"] == [ACME_ROLE]
    assert auth["lease_duration"] == 15 * 60
    assert auth["metadata"]["service_account_name"] == "gtc-worker"
    assert auth["metadata"]["service_account_namespace"] == "acme-prod"
    assert (reviewer.reviews, reviewer.authenticated_reviews) == (reviews + 1, authenticated + 1)


def test_the_audit_log_records_the_login(bootstrapped: Bootstrapped) -> None:
    """The file audit device shows the login: path and operation in clear, the role and SA in metadata."""
    openbao = bootstrapped.openbao
    start = len(openbao.audit_entries())
    token = bootstrapped.worker_token("globex-prod").read_text()

    login(openbao, token, "gtc-prod-globex")

    responses = [
        entry
        for entry in openbao.audit_entries()[start:]
        if entry["type"] == "response" and entry["request"]["path"] == "auth/kubernetes/login"
    ]
    assert len(responses) == 1
    entry = responses[0]
    assert entry["request"]["operation"] == "update"
    assert entry["auth"]["policies"] == ["gtc-prod-globex"]
    assert entry["auth"]["metadata"]["role"] == "gtc-prod-globex"
    assert entry["auth"]["metadata"]["service_account_namespace"] == "globex-prod"
    assert entry["auth"]["metadata"]["service_account_name"] == "gtc-worker"
    # Values are HMAC'd by the audit device: the JWT itself is not in the log.
    assert entry["request"]["data"]["jwt"].startswith("hmac-sha256:")
    assert token not in openbao.audit_log.read_text()


@pytest.mark.parametrize(
    ("namespace", "service_account", "options", "asks_reviewer"),
    [
        pytest.param("acme-prod", "default", {}, False, id="default-service-account"),
        pytest.param("globex-prod", "gtc-worker", {}, False, id="namespace-of-another-tenant"),
        pytest.param("other", "gtc-worker", {}, False, id="namespace-not-bound"),
        pytest.param("acme-prod", "gtc-worker", {"wrong_key": True}, True, id="signed-by-the-wrong-key"),
        # OpenBao checks exp itself but tolerates some clock skew; the stand-in, like the API server's
        # token authenticator, refuses a token that expired seconds ago.
        pytest.param("acme-prod", "gtc-worker", {"ttl_seconds": -3600}, False, id="expired-an-hour-ago"),
        pytest.param("acme-prod", "gtc-worker", {"ttl_seconds": -10}, True, id="expired-seconds-ago"),
        pytest.param("acme-prod", "gtc-worker", {"audience": "not-vault"}, False, id="wrong-audience"),
    ],
)
def test_login_is_refused(
    bootstrapped: Bootstrapped,
    namespace: str,
    service_account: str,
    options: dict[str, Any],
    asks_reviewer: bool,
) -> None:
    """Each of these tokens gets 403 from auth/kubernetes/login; bad signatures are caught by the reviewer."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    jwt = reviewer.sign(namespace, service_account, **options)
    reviews, authenticated = reviewer.reviews, reviewer.authenticated_reviews

    with pytest.raises(hvac.exceptions.Forbidden):
        login(openbao, jwt)

    # OpenBao checks role bindings and audience itself; signature and expiry need the TokenReview.
    assert reviewer.reviews == reviews + (1 if asks_reviewer else 0)
    assert reviewer.authenticated_reviews == authenticated


def test_the_worker_token_can_only_read_its_tenant_and_decrypt_with_its_key(
    bootstrapped: Bootstrapped,
) -> None:
    """Capabilities of a logged-in worker token, as Vault computes them from the policy."""
    openbao = bootstrapped.openbao
    token = login(openbao, bootstrapped.worker_token().read_text())["auth"]["client_token"]
    paths = {
        "secret/data/greentic/prod/acme/default/llm/openai": ["read"],
        "secret/data/greentic/prod/acme/x": ["read"],
        "secret/data/greentic/prod/globex/default/llm/openai": ["deny"],
        "secret/data/greentic/staging/acme/default/llm/openai": ["deny"],
        # Versions, never values: what exec --watch checks (issue 13); never another tenant's.
        "secret/metadata/greentic/prod/acme/default/llm/openai": ["read"],
        "secret/metadata/greentic/prod/globex/default/llm/openai": ["deny"],
        "secret/delete/greentic/prod/acme/default/llm/openai": ["deny"],
        "transit/decrypt/gtc-prod-acme": ["update"],
        "transit/decrypt/gtc-prod-globex": ["deny"],
        "transit/encrypt/gtc-prod-acme": ["deny"],
        "transit/datakey/plaintext/gtc-prod-acme": ["deny"],
        "transit/keys/gtc-prod-acme": ["deny"],
        "sys/policies/acl/gtc-prod-acme": ["deny"],
        "auth/token/create": ["deny"],
    }
    answer = openbao.client().write_data("sys/capabilities", data={"token": token, "paths": list(paths)})
    assert {path: answer["data"][path] for path in paths} == paths


# --- failures at the edge ---------------------------------------------------------------------------------


def test_an_existing_kv_v1_mount_is_refused(bootstrapped: Bootstrapped, files: Path) -> None:
    """VAULT_KV_MOUNT pointing at KV v1: exit 1, a message, and nothing is created for the tenant."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    root = openbao.client()
    root.sys.enable_secrets_engine("kv", path="legacy-kv", options={"version": "1"})
    environ = {**openbao.admin_environ(), "VAULT_KV_MOUNT": "legacy-kv"}

    code, _, err = run_bootstrap(bootstrap_args(ENV, "kvone", ["kvone-prod"], reviewer, files), environ)

    assert code == bootstrap.EXIT_FAILED
    assert "legacy-kv/ is a KV version 1 mount; bootstrap does not upgrade it" in err
    assert vault_state(root, "gtc-prod-kvone")["policy"] is None
    assert root.read("sys/mounts")["data"]["legacy-kv/"]["options"]["version"] == "1"


def test_a_token_without_admin_rights_is_refused(bootstrapped: Bootstrapped, files: Path) -> None:
    """VAULT_TOKEN with only the default policy: Vault answers 403, bootstrap exits 1 and says why."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    weak = openbao.client().auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    environ = {**openbao.admin_environ(), "VAULT_TOKEN": weak}
    code, out, err = run_bootstrap(bootstrap_args(ENV, "acme", ["acme-prod"], reviewer, files), environ)
    assert code == bootstrap.EXIT_FAILED
    assert "Vault refused a request (403)" in err
    assert weak not in out + err


def test_wrong_ca_is_a_tls_error(bootstrapped: Bootstrapped, files: Path) -> None:
    """VAULT_CACERT that does not sign Vault's certificate: exit 3, TLS error, nothing sent."""
    openbao, reviewer = bootstrapped.openbao, bootstrapped.reviewer
    environ = {**openbao.admin_environ(), "VAULT_CACERT": reviewer.ca_file}
    code, _, err = run_bootstrap(bootstrap_args(ENV, "acme", ["acme-prod"], reviewer, files), environ)
    assert code == bootstrap.EXIT_CONFIG
    assert "TLS error talking to Vault" in err


@pytest.fixture
def sealed(bootstrapped: Bootstrapped) -> Iterator[OpenBao]:
    bootstrapped.openbao.seal()
    try:
        yield bootstrapped.openbao
    finally:
        bootstrapped.openbao.unseal()


def test_sealed_vault_is_unavailable(sealed: OpenBao, bootstrapped: Bootstrapped, files: Path) -> None:
    """A sealed Vault: exit 4 and a message saying so."""
    code, _, err = run_bootstrap(
        bootstrap_args(ENV, "acme", ["acme-prod"], bootstrapped.reviewer, files), sealed.admin_environ()
    )
    assert code == bootstrap.EXIT_UNAVAILABLE
    assert "sealed" in err


@pytest.fixture
def stopped(bootstrapped: Bootstrapped) -> Iterator[OpenBao]:
    bootstrapped.openbao.stop()
    try:
        yield bootstrapped.openbao
    finally:
        bootstrapped.openbao.start()


def test_stopped_vault_is_unreachable_and_data_survives_a_restart(
    stopped: OpenBao, bootstrapped: Bootstrapped, files: Path
) -> None:
    """Nothing listening: exit 4. After start (fixture teardown) the bootstrap is still there."""
    code, _, err = run_bootstrap(
        bootstrap_args(ENV, "acme", ["acme-prod"], bootstrapped.reviewer, files), stopped.admin_environ()
    )
    assert code == bootstrap.EXIT_UNAVAILABLE
    assert "Vault is unreachable" in err
    stopped.start()
    try:
        auth = login(stopped, bootstrapped.worker_token().read_text())["auth"]
        assert auth["policies"] == [ACME_ROLE]
    finally:
        stopped.stop()


# --- the TokenReview stand-in itself ---------------------------------------------------------------------


def post_review(
    reviewer: TokenReviewer, body: dict[str, Any], bearer: str | None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        reviewer.url + REVIEW_PATH, data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    context = ssl.create_default_context(cafile=reviewer.ca_file)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), json.loads(error.read())


def test_stand_in_requires_the_reviewer_bearer_token(token_reviewer: TokenReviewer) -> None:
    """No bearer or a forged one: 401; a valid ServiceAccount that is not the reviewer: 403."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "x"}}
    assert post_review(token_reviewer, body, None)[0] == 401
    forged = token_reviewer.server.sign(
        "vault",
        "vault-token-reviewer",
        audience="https://kubernetes.default.svc.cluster.local",
        key=token_reviewer.server.wrong_key,
    )
    assert post_review(token_reviewer, body, forged)[0] == 401
    # A worker's own token (audience vault) is what Vault sends when it has no reviewer JWT: refused.
    assert post_review(token_reviewer, body, token_reviewer.sign("acme-prod", "gtc-worker"))[0] == 401
    api_token = token_reviewer.sign("acme-prod", "gtc-worker", audience=API_SERVER_AUDIENCE)
    status, answer = post_review(token_reviewer, body, api_token)
    assert status == 403
    assert answer["kind"] == "Status" and answer["reason"] == "Forbidden"


def test_stand_in_answers_like_the_api_server(token_reviewer: TokenReviewer) -> None:
    """A good token: authenticated, username, uid, groups, audiences; a bad one: authenticated false."""
    good = token_reviewer.sign("acme-prod", "gtc-worker")
    body = {"kind": "TokenReview", "spec": {"token": good, "audiences": ["vault", "other"]}}
    status, answer = post_review(token_reviewer, body, token_reviewer.reviewer_jwt)
    assert status == 201
    assert answer["apiVersion"] == "authentication.k8s.io/v1" and answer["kind"] == "TokenReview"
    assert answer["status"]["authenticated"] is True
    assert answer["status"]["user"]["username"] == "system:serviceaccount:acme-prod:gtc-worker"
    assert "system:serviceaccounts:acme-prod" in answer["status"]["user"]["groups"]
    assert answer["status"]["user"]["uid"]
    assert answer["status"]["audiences"] == ["vault"]
    assert good not in json.dumps(answer)

    for bad, reason in (
        (token_reviewer.sign("acme-prod", "gtc-worker", wrong_key=True), "invalid signature"),
        (token_reviewer.sign("acme-prod", "gtc-worker", ttl_seconds=-1), "expired"),
        (token_reviewer.sign("acme-prod", "gtc-worker", audience="elsewhere"), "audiences"),
        (good[:-4] + "AAAA", "invalid signature"),
    ):
        status, answer = post_review(
            token_reviewer,
            {"kind": "TokenReview", "spec": {"token": bad, "audiences": ["vault"]}},
            token_reviewer.reviewer_jwt,
        )
        assert status == 201
        assert answer["status"]["authenticated"] is False
        assert reason in answer["status"]["error"]
