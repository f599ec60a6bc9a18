"""Unit tests of ``gtc-secrets bootstrap``: the pure plan functions and the argument refusals (no Vault)."""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gtc_secrets import bootstrap as b

# A fake JWT-shaped credential: must never be printed, logged or put in a repr.
CANARY_JWT = "eyJhbGciOiJSUzI1NiJ9.Y2FuYXJ5LXJldmlld2VyLWp3dA.c2lnbmF0dXJlLWNhbmFyeQ"
CANARY_TOKEN = "hvs.canary-admin-token-7f3a"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n"


def target(**overrides: Any) -> b.Target:
    values: dict[str, Any] = {
        "env": "prod",
        "tenant": "acme",
        "namespaces": ("acme-prod",),
        "kubernetes_host": "https://k8s.example:6443",
        "kubernetes_ca_pem": CA_PEM,
        "token_reviewer_jwt": CANARY_JWT,
    }
    values.update(overrides)
    return b.Target(**values)


EMPTY = b.VaultState(
    auth_mounts={}, secret_mounts={}, k8s_config=None, transit_key=None, policies={}, roles={}
)

# Shapes of what Vault answers (trimmed to the fields that matter, plus some it adds).
KV2_MOUNT = {"type": "kv", "options": {"version": "2"}, "description": "key/value secret storage"}
TRANSIT_MOUNT = {"type": "transit", "options": None}
K8S_MOUNT = {"type": "kubernetes", "options": None}
GOOD_KEY = {
    "type": "aes256-gcm96",
    "exportable": False,
    "deletion_allowed": False,
    "allow_plaintext_backup": False,
}


def vault_role(t: b.Target, grant: b.Grant | None = None) -> dict[str, Any]:
    """A role as Vault answers it after bootstrap wrote it (with fields bootstrap does not manage)."""
    grant = grant or t.tenant_grant
    return {
        "alias_name_source": "serviceaccount_uid",
        "audience": t.audience,
        "bound_service_account_names": [t.service_account],
        "bound_service_account_namespaces": list(reversed(grant.namespaces)),
        "policies": [grant.name],
        "token_policies": [grant.name],
        "token_no_default_policy": True,
        "token_ttl": t.token_ttl,
        "token_max_ttl": t.token_max_ttl,
        "token_bound_cidrs": [],
        "token_type": "default",
    }


def vault_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "disable_iss_validation": True,
        "disable_local_ca_jwt": False,
        "issuer": "",
        "kubernetes_ca_cert": CA_PEM,
        "kubernetes_host": "https://k8s.example:6443",
        "pem_keys": [],
        "token_reviewer_jwt_set": True,
    }
    config.update(overrides)
    return config


def bootstrapped_state(t: b.Target) -> b.VaultState:
    return b.VaultState(
        auth_mounts={"kubernetes/": K8S_MOUNT, "token/": {"type": "token"}},
        secret_mounts={"secret/": KV2_MOUNT, "transit/": TRANSIT_MOUNT, "sys/": {"type": "system"}},
        k8s_config=vault_config(),
        transit_key=GOOD_KEY,
        policies={grant.name: b.render_policy(t, grant) + "\n" for grant in t.grants},
        roles={grant.name: vault_role(t, grant) for grant in t.grants},
    )


# --- the policy -----------------------------------------------------------------------------------------


def policy_rules(hcl: str) -> dict[str, list[str]]:
    blocks = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', hcl)
    return {path: re.findall(r'"([^"]+)"', caps) for path, caps in blocks}


def test_policy_grants_read_on_the_tenant_prefix_and_decrypt_with_its_key_only() -> None:
    """The policy has exactly three rules: read the tenant's KV data and metadata (versions, for
    exec --watch), update (decrypt) its transit key."""
    rules = policy_rules(b.render_policy(target()))
    assert rules == {
        "secret/data/greentic/prod/acme/*": ["read"],
        "secret/metadata/greentic/prod/acme/*": ["read"],
        "transit/decrypt/gtc-prod-acme": ["update"],
    }
    assert b.render_policy(target()).count("path ") == 3


def test_policy_follows_the_mount_and_prefix_settings() -> None:
    """Custom mounts and prefix appear in the rules; nothing else changes."""
    rules = policy_rules(
        b.render_policy(target(kv_mount="kv", kv_prefix="gt/x", transit_mount="tr", env="dev"))
    )
    assert rules == {
        "kv/data/gt/x/dev/acme/*": ["read"],
        "kv/metadata/gt/x/dev/acme/*": ["read"],
        "tr/decrypt/gtc-dev-acme": ["update"],
    }


def test_policy_change_is_detected_and_whitespace_is_not() -> None:
    """A policy with extra rules is rewritten; the same text with other surrounding whitespace is not."""
    t = target()
    assert b.plan_policy("\n" + b.render_policy(t) + "\n\n", t).verb == "unchanged"
    widened = b.render_policy(t) + 'path "secret/metadata/*" { capabilities = ["list"] }\n'
    step = b.plan_policy(widened, t)
    assert step.verb == "update"
    assert step.writes == (b.Write("sys/policies/acl/gtc-prod-acme", {"policy": b.render_policy(t)}),)
    assert b.plan_policy(None, t).verb == "create"


# --- the whole plan ----------------------------------------------------------------------------------------


def test_plan_on_an_empty_vault_creates_everything_in_order() -> None:
    """Mounts first, then the key, the policy, the auth config, and the role that uses the policy."""
    steps = b.plan(EMPTY, target())
    assert [s.verb for s in steps] == ["create"] * 7
    assert [w.path for s in steps for w in s.writes] == [
        "sys/auth/kubernetes",
        "sys/mounts/secret",
        "sys/mounts/transit",
        "transit/keys/gtc-prod-acme",
        "sys/policies/acl/gtc-prod-acme",
        "auth/kubernetes/config",
        "auth/kubernetes/role/gtc-prod-acme",
    ]
    writes = {w.path: w.data for s in steps for w in s.writes}
    assert writes["sys/mounts/secret"] == {"type": "kv", "options": {"version": "2"}}
    assert writes["transit/keys/gtc-prod-acme"] == {
        "type": "aes256-gcm96",
        "exportable": False,
        "allow_plaintext_backup": False,
    }


def test_plan_on_a_bootstrapped_vault_changes_nothing() -> None:
    """The state bootstrap leaves behind plans to no writes at all."""
    t = target()
    steps = b.plan(bootstrapped_state(t), t)
    assert {s.verb for s in steps} == {"unchanged"}
    assert [w for s in steps for w in s.writes] == []
    assert b.summary(steps, t, dry_run=False).startswith("nothing to change")


def test_plan_uses_the_mount_settings() -> None:
    """VAULT_K8S_MOUNT / VAULT_KV_MOUNT / VAULT_TRANSIT_MOUNT name every path written."""
    t = target(k8s_mount="k8s-east", kv_mount="kv", transit_mount="tr")
    paths = [w.path for s in b.plan(EMPTY, t) for w in s.writes]
    assert paths == [
        "sys/auth/k8s-east",
        "sys/mounts/kv",
        "sys/mounts/tr",
        "tr/keys/gtc-prod-acme",
        "sys/policies/acl/gtc-prod-acme",
        "auth/k8s-east/config",
        "auth/k8s-east/role/gtc-prod-acme",
    ]


# --- mounts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mount",
    [
        {"type": "kv", "options": {"version": "1"}},
        {"type": "kv", "options": None},
        {"type": "kv"},
        {"type": "generic"},
    ],
)
def test_an_existing_kv_v1_mount_is_an_error_not_an_upgrade(mount: Mapping[str, Any]) -> None:
    """KV v1 at the KV mount stops bootstrap with a message; nothing is written."""
    with pytest.raises(b.BootstrapError, match=r"KV version 1 mount; bootstrap does not upgrade it"):
        b.plan_kv_mount({"secret/": mount}, target())


def test_another_engine_at_the_kv_mount_is_an_error() -> None:
    """A non-KV engine at the KV mount is refused and names the env var to change."""
    with pytest.raises(b.BootstrapError, match="VAULT_KV_MOUNT"):
        b.plan_kv_mount({"secret/": {"type": "database"}}, target())


def test_kv_v2_mount_is_unchanged() -> None:
    """An existing KV v2 mount (version as string, as Vault answers) is left alone."""
    assert b.plan_kv_mount({"secret/": KV2_MOUNT}, target()).verb == "unchanged"


def test_transit_and_auth_mounts_of_another_type_are_errors() -> None:
    """A non-transit engine at the transit mount, or another auth type at the k8s mount, is refused."""
    with pytest.raises(b.BootstrapError, match="not transit"):
        b.plan_transit_mount({"transit/": {"type": "kv"}}, target())
    with pytest.raises(b.BootstrapError, match="VAULT_K8S_MOUNT"):
        b.plan_auth_mount({"kubernetes/": {"type": "jwt"}}, target())


# --- the transit key --------------------------------------------------------------------------------------


def test_transit_key_that_allows_deletion_is_locked() -> None:
    """deletion_allowed=true is turned off through the key's config endpoint."""
    step = b.plan_transit_key({**GOOD_KEY, "deletion_allowed": True}, target())
    assert step.verb == "update"
    assert step.writes == (b.Write("transit/keys/gtc-prod-acme/config", {"deletion_allowed": False}),)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ({**GOOD_KEY, "type": "chacha20-poly1305"}, "not 'aes256-gcm96'"),
        ({**GOOD_KEY, "exportable": True}, "exportable=true"),
        ({**GOOD_KEY, "allow_plaintext_backup": True}, "allow_plaintext_backup=true"),
    ],
)
def test_transit_key_that_cannot_be_fixed_is_an_error(key: Mapping[str, Any], message: str) -> None:
    """Wrong type or a key that may have left Vault stops bootstrap (Vault cannot undo these)."""
    with pytest.raises(b.BootstrapError, match=re.escape(message)):
        b.plan_transit_key(key, target())


# --- the role ---------------------------------------------------------------------------------------------


def test_role_binds_one_service_account_in_the_given_namespaces_with_the_tenant_policy_only() -> None:
    """The role written: gtc-worker, the namespaces, the audience, only the tenant policy, short TTLs."""
    t = target(namespaces=("acme-prod", "acme-prod-eu"))
    step = b.plan_role(None, t)
    assert step.writes == (
        b.Write(
            "auth/kubernetes/role/gtc-prod-acme",
            {
                "bound_service_account_names": ["gtc-worker"],
                "bound_service_account_namespaces": ["acme-prod", "acme-prod-eu"],
                "audience": "vault",
                "token_policies": ["gtc-prod-acme"],
                "token_no_default_policy": True,
                "token_ttl": 900,
                "token_max_ttl": 3600,
            },
        ),
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"bound_service_account_namespaces": ["acme-prod", "globex-prod"]},
            "bound_service_account_namespaces",
        ),
        ({"bound_service_account_names": ["*"]}, "bound_service_account_names"),
        ({"audience": ""}, "audience"),
        ({"token_policies": ["gtc-prod-acme", "default"]}, "token_policies"),
        ({"token_no_default_policy": False}, "token_no_default_policy"),
        ({"token_ttl": 86400}, "token_ttl"),
        ({"token_max_ttl": 0}, "token_max_ttl"),
    ],
)
def test_role_drift_is_reported_by_field_and_rewritten(change: Mapping[str, Any], field: str) -> None:
    """Any managed field that differs is named in the output and the role is written again."""
    t = target()
    step = b.plan_role({**vault_role(t), **change}, t)
    assert step.verb == "update"
    assert step.details == (field,)
    assert step.writes[0].data["bound_service_account_namespaces"] == ["acme-prod"]


# --- auth/<mount>/config --------------------------------------------------------------------------------


def test_k8s_config_first_time_needs_a_host() -> None:
    """Without a config in Vault and without --kubernetes-host there is nothing sensible to write."""
    with pytest.raises(b.BootstrapError, match="--kubernetes-host is required"):
        b.plan_k8s_config(None, target(kubernetes_host=None))


def test_k8s_config_first_time_writes_what_was_given() -> None:
    """Host, CA and reviewer JWT go into the first write."""
    step = b.plan_k8s_config(None, target())
    assert step.verb == "create"
    assert step.writes[0].data == {
        "kubernetes_host": "https://k8s.example:6443",
        "kubernetes_ca_cert": CA_PEM,
        "token_reviewer_jwt": CANARY_JWT,
    }


def test_k8s_config_unchanged_when_flags_match_even_with_a_reviewer_jwt_given() -> None:
    """A set reviewer JWT cannot be compared: it is kept, and the output says so."""
    step = b.plan_k8s_config(vault_config(kubernetes_ca_cert=CA_PEM.replace("\n", "\r\n")), target())
    assert step.verb == "unchanged"
    assert step.writes == ()
    assert "not compared" in step.describe(dry_run=False)


def test_k8s_config_change_keeps_every_other_field() -> None:
    """Changing the host rewrites the config with issuer, pem_keys, flags... as Vault returned them."""
    current = vault_config(issuer="https://issuer.example", pem_keys=["PEM"], disable_local_ca_jwt=True)
    step = b.plan_k8s_config(current, target(kubernetes_host="https://new.example:443"))
    assert step.verb == "update"
    assert step.writes[0].data == {
        "disable_iss_validation": True,
        "disable_local_ca_jwt": True,
        "issuer": "https://issuer.example",
        "kubernetes_ca_cert": CA_PEM,
        "kubernetes_host": "https://new.example:443",
        "pem_keys": ["PEM"],
        "token_reviewer_jwt": CANARY_JWT,
    }


def test_k8s_config_change_that_would_drop_the_reviewer_jwt_is_refused() -> None:
    """A set reviewer JWT that is not given again would be dropped by the rewrite: refuse."""
    with pytest.raises(b.BootstrapError, match=r"would be dropped\. Pass --token-reviewer-jwt FILE again"):
        b.plan_k8s_config(
            vault_config(), target(kubernetes_host="https://new.example:443", token_reviewer_jwt=None)
        )


def test_k8s_config_without_reviewer_jwt_and_no_change_is_fine() -> None:
    """Omitting --token-reviewer-jwt is fine as long as nothing must be rewritten."""
    step = b.plan_k8s_config(vault_config(), target(token_reviewer_jwt=None, kubernetes_ca_pem=None))
    assert step.verb == "unchanged"


def test_k8s_config_reviewer_jwt_is_written_when_vault_has_none_or_on_request() -> None:
    """token_reviewer_jwt_set=false, or --replace-token-reviewer-jwt, writes the given JWT."""
    step = b.plan_k8s_config(vault_config(token_reviewer_jwt_set=False), target())
    assert (step.verb, step.details) == ("update", ("token_reviewer_jwt",))
    assert step.writes[0].data["token_reviewer_jwt"] == CANARY_JWT
    assert "token_reviewer_jwt_set" not in step.writes[0].data
    step = b.plan_k8s_config(vault_config(), target(replace_token_reviewer_jwt=True))
    assert step.verb == "update"
    assert step.writes[0].data["token_reviewer_jwt"] == CANARY_JWT


# --- what is printed --------------------------------------------------------------------------------------


def test_describe_wording() -> None:
    """created/updated/unchanged, and would create/would update in a dry run."""
    assert b.Step("create", "policy p").describe(dry_run=False) == "created policy p"
    assert b.Step("create", "policy p").describe(dry_run=True) == "would create policy p"
    assert (
        b.Step("update", "role r", ("token_ttl",)).describe(dry_run=True) == "would update role r (token_ttl)"
    )
    assert b.Step("unchanged", "role r").describe(dry_run=True) == "unchanged: role r"


def test_credentials_stay_out_of_reprs_and_output() -> None:
    """Neither the reviewer JWT nor anything holding it shows up in a repr or the plan's output."""
    t = target()
    steps = b.plan(EMPTY, t)
    shown = repr(t) + repr(steps) + "".join(s.describe(dry_run=d) for s in steps for d in (True, False))
    assert CANARY_JWT not in shown
    assert CANARY_TOKEN not in repr(b.Connection(addr="https://v:8200", token=CANARY_TOKEN))


# --- flags and environment: refused before any I/O ---------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gtc-secrets", exit_on_error=False)
    b.register(parser.add_subparsers(dest="subcommand", required=True))
    return parser.parse_args(["bootstrap", *argv])


ENVIRON = {"VAULT_ADDR": "https://127.0.0.1:8200", "VAULT_TOKEN": CANARY_TOKEN}


def no_vault(connection: b.Connection) -> b.VaultAdmin:
    raise AssertionError("bootstrap talked to Vault although the arguments are invalid")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--namespace", "*"], "--namespace '*' is refused"),
        (["--namespace", "acme-*"], "--namespace '*' is refused"),
        (["--namespace", "acme-prod", "--namespace", "*"], "--namespace '*' is refused"),
        (["--namespace", "acme-prod", "--service-account", "*"], "--service-account '*' is refused"),
        (["--namespace", "acme-prod", "--service-account", "gtc-*"], "--service-account '*' is refused"),
        (["--namespace", "Acme_Prod"], "not a Kubernetes namespace name"),
        (["--namespace", "acme-prod", "--service-account", "a/b"], "not a Kubernetes ServiceAccount name"),
        (["--namespace", "acme-prod", "--audience", "*"], "--audience"),
        (["--namespace", "acme-prod", "--token-ttl", "2h"], "token TTLs must satisfy"),
        (
            ["--namespace", "acme-prod", "--token-max-ttl", "48h", "--token-ttl", "1h"],
            "token TTLs must satisfy",
        ),
        (["--namespace", "acme-prod", "--token-ttl", "0"], "token TTLs must satisfy"),
        (["--namespace", "acme-prod", "--token-ttl", "15 minutes"], "not a duration"),
        (["--namespace", "acme-prod", "--kubernetes-host", "http://k8s:6443"], "must be an https:// URL"),
        (["--namespace", "acme-prod", "--replace-token-reviewer-jwt"], "needs --token-reviewer-jwt"),
        (["--namespace", "acme-prod", "--kubernetes-ca", "/nonexistent/ca.pem"], "cannot read"),
    ],
)
def test_bad_arguments_are_refused_before_any_io(argv: list[str], message: str) -> None:
    """Exit code 2, a message naming the flag, and Vault is never contacted."""
    err = io.StringIO()
    args = parse("--env", "prod", "--tenant", "acme", *argv)
    code = b.command(args, ENVIRON, admin_factory=no_vault, out=io.StringIO(), err=err)
    assert code == b.EXIT_USAGE
    assert message in err.getvalue()
    assert CANARY_TOKEN not in err.getvalue()


@pytest.mark.parametrize(
    ("flag", "value"), [("--env", "Prod"), ("--env", "../prod"), ("--tenant", ""), ("--tenant", "a/b")]
)
def test_bad_env_or_tenant_is_refused(flag: str, value: str) -> None:
    """env and tenant become policy, role and key names: the same grammar as the worker's scope."""
    argv = {"--env": "prod", "--tenant": "acme", flag: value}
    args = parse("--env", argv["--env"], "--tenant", argv["--tenant"], "--namespace", "acme-prod")
    err = io.StringIO()
    assert b.command(args, ENVIRON, admin_factory=no_vault, out=io.StringIO(), err=err) == b.EXIT_USAGE
    assert flag in err.getvalue()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"VAULT_TOKEN": CANARY_TOKEN}, "VAULT_ADDR must be set to an https:// URL"),
        ({"VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_TOKEN": CANARY_TOKEN}, "https://"),
        (
            {
                "VAULT_ADDR": "http://127.0.0.1:8200",
                "VAULT_TOKEN": CANARY_TOKEN,
                "GREENTIC_VAULT_INSECURE_HTTP": "1",
            },
            "GREENTIC_VAULT_INSECURE_HTTP",
        ),
        (
            {
                "VAULT_ADDR": "http://127.0.0.1:8200",
                "VAULT_TOKEN": CANARY_TOKEN,
                "GREENTIC_VAULT_INSECURE_HTTP": "true",
                "VAULT_CACERT": "/etc/hostname",
            },
            "nothing would be verified",
        ),
        ({"VAULT_ADDR": "https://127.0.0.1:8200"}, "VAULT_TOKEN is not set"),
        (
            {**ENVIRON, "VAULT_CACERT": "/nonexistent/ca.pem"},
            "VAULT_CACERT=/nonexistent/ca.pem: no such file",
        ),
        ({**ENVIRON, "VAULT_KV_MOUNT": "../sys"}, "VAULT_KV_MOUNT"),
    ],
)
def test_bad_environment_is_refused_before_any_io(environ: dict[str, str], message: str) -> None:
    """Admin settings come from the environment and are checked before Vault is contacted."""
    err = io.StringIO()
    args = parse("--env", "prod", "--tenant", "acme", "--namespace", "acme-prod")
    assert b.command(args, environ, admin_factory=no_vault, out=io.StringIO(), err=err) == b.EXIT_USAGE
    assert message in err.getvalue()
    assert CANARY_TOKEN not in err.getvalue()


def test_a_reviewer_jwt_file_that_is_not_a_jwt_is_refused_without_showing_it(tmp_path: Path) -> None:
    """The file's content is a credential: the error names the file, never what is in it."""
    secret_file = tmp_path / "reviewer.jwt"
    secret_file.write_text("not-a-jwt " + CANARY_JWT, encoding="ascii")
    err = io.StringIO()
    args = parse(
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--namespace",
        "acme-prod",
        "--token-reviewer-jwt",
        str(secret_file),
    )
    assert b.command(args, ENVIRON, admin_factory=no_vault, out=io.StringIO(), err=err) == b.EXIT_USAGE
    assert str(secret_file) in err.getvalue()
    assert CANARY_JWT not in err.getvalue()


def test_namespaces_are_deduplicated_and_sorted(tmp_path: Path) -> None:
    """Repeated --namespace flags give one sorted list (a stable role, so re-runs compare equal)."""
    args = parse(
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--namespace",
        "b-ns",
        "--namespace",
        "a-ns",
        "--namespace",
        "b-ns",
    )
    t = b.target_from_args(args, {})
    assert t.namespaces == ("a-ns", "b-ns")
    assert (t.k8s_mount, t.kv_mount, t.kv_prefix, t.transit_mount) == (
        "kubernetes",
        "secret",
        "greentic",
        "transit",
    )


@pytest.mark.parametrize(("text", "seconds"), [("900", 900), ("900s", 900), ("15m", 900), ("1h", 3600)])
def test_parse_duration(text: str, seconds: int) -> None:
    """Plain seconds or s/m/h suffixes."""
    assert b.parse_duration(text, "--token-ttl") == seconds


# --- run(): the edge, against a fake at our own seam (VaultAdmin) ---------------------------------------


class RecordingVault:
    """Answers reads from a fixed map (Vault's JSON answers) and records writes."""

    def __init__(self, answers: Mapping[str, Mapping[str, Any]]) -> None:
        self.answers = answers
        self.reads: list[str] = []
        self.writes: list[str] = []

    def read(self, path: str) -> Mapping[str, Any] | None:
        self.reads.append(path)
        return self.answers.get(path)

    def write(self, path: str, data: Mapping[str, Any]) -> None:
        self.writes.append(path)


def test_dry_run_reads_but_never_writes() -> None:
    """--dry-run prints 'would ...' for every change and performs no write."""
    vault = RecordingVault({"sys/mounts": {"data": {"secret/": KV2_MOUNT}}})
    out = io.StringIO()
    steps = b.run(vault, target(), dry_run=True, out=out)
    assert vault.writes == []
    assert vault.reads
    text = out.getvalue()
    assert "would create policy gtc-prod-acme" in text
    assert "unchanged: secrets engine secret/ (kv-v2)" in text
    assert text.rstrip().endswith("dry run: 6 change(s) for env prod, tenant acme not applied")
    assert sum(s.verb != "unchanged" for s in steps) == 6
    assert CANARY_JWT not in text


def test_run_writes_each_step_and_prints_it() -> None:
    """Without --dry-run the writes happen in plan order and each change is printed."""
    vault = RecordingVault({})
    out = io.StringIO()
    b.run(vault, target(), dry_run=False, out=out)
    assert vault.writes[0] == "sys/auth/kubernetes"
    assert vault.writes[-1] == "auth/kubernetes/role/gtc-prod-acme"
    assert "created role gtc-prod-acme (auth/kubernetes)" in out.getvalue()
    assert CANARY_JWT not in out.getvalue()


def test_a_conflict_is_reported_with_exit_code_1_and_nothing_written() -> None:
    """A KV v1 mount stops the command before the first write."""
    vault = RecordingVault({"sys/mounts": {"data": {"secret/": {"type": "kv", "options": {"version": "1"}}}}})
    err = io.StringIO()
    args = parse(
        "--env", "prod", "--tenant", "acme", "--namespace", "acme-prod", "--kubernetes-host", "https://k:1"
    )
    code = b.command(args, ENVIRON, admin_factory=lambda _: vault, out=io.StringIO(), err=err)
    assert code == b.EXIT_FAILED
    assert "KV version 1" in err.getvalue()
    assert vault.writes == []


# --- per-team policies and roles (--team) -----------------------------------------------------------------

TEAMS = (("billing", ("acme-billing",)), ("core", ("acme-core", "acme-core-eu")))


def team_target(**overrides: Any) -> b.Target:
    return target(**{"namespaces": (), "teams": TEAMS, **overrides})


def grant(t: b.Target, team: str) -> b.Grant:
    (found,) = [g for g in t.grants if g.name == f"gtc-prod-acme-{team}"]
    return found


def test_team_policy_reads_its_team_and_the_shared_team_data_and_metadata_and_decrypts() -> None:
    """Five rules: read data and metadata of the own and the shared team, decrypt with the tenant key."""
    t = team_target()
    hcl = b.render_policy(t, grant(t, "core"))
    assert policy_rules(hcl) == {
        "secret/data/greentic/prod/acme/core/*": ["read"],
        "secret/data/greentic/prod/acme/default/*": ["read"],
        "secret/metadata/greentic/prod/acme/core/*": ["read"],
        "secret/metadata/greentic/prod/acme/default/*": ["read"],
        "transit/decrypt/gtc-prod-acme": ["update"],
    }
    assert hcl.count("path ") == 5
    assert "billing" not in hcl


def test_the_shared_teams_own_policy_names_it_once_and_shared_team_is_configurable() -> None:
    """--team default=...: one team to read; --shared-team common: common instead of default."""
    t = team_target(teams=(("default", ("acme-prod",)),))
    assert set(policy_rules(b.render_policy(t, grant(t, "default")))) == {
        "secret/data/greentic/prod/acme/default/*",
        "secret/metadata/greentic/prod/acme/default/*",
        "transit/decrypt/gtc-prod-acme",
    }
    t = team_target(shared_team="common", kv_mount="kv", kv_prefix="gt")
    assert set(policy_rules(b.render_policy(t, grant(t, "billing")))) == {
        "kv/data/gt/prod/acme/billing/*",
        "kv/data/gt/prod/acme/common/*",
        "kv/metadata/gt/prod/acme/billing/*",
        "kv/metadata/gt/prod/acme/common/*",
        "transit/decrypt/gtc-prod-acme",
    }


def test_plan_with_teams_only_creates_one_policy_and_role_per_team_and_no_tenant_role() -> None:
    """Policies before the auth config, roles after it; each role bound to its team's namespaces only."""
    t = team_target()
    steps = b.plan(EMPTY, t)
    assert [w.path for s in steps for w in s.writes] == [
        "sys/auth/kubernetes",
        "sys/mounts/secret",
        "sys/mounts/transit",
        "transit/keys/gtc-prod-acme",
        "sys/policies/acl/gtc-prod-acme-billing",
        "sys/policies/acl/gtc-prod-acme-core",
        "auth/kubernetes/config",
        "auth/kubernetes/role/gtc-prod-acme-billing",
        "auth/kubernetes/role/gtc-prod-acme-core",
    ]
    roles = {w.path: w.data for s in steps for w in s.writes if "/role/" in w.path}
    core = roles["auth/kubernetes/role/gtc-prod-acme-core"]
    assert core["bound_service_account_namespaces"] == ["acme-core", "acme-core-eu"]
    assert core["token_policies"] == ["gtc-prod-acme-core"]
    assert core["token_no_default_policy"] is True
    assert roles["auth/kubernetes/role/gtc-prod-acme-billing"]["bound_service_account_namespaces"] == [
        "acme-billing"
    ]
    assert (
        b.summary(steps, t, dry_run=False)
        == "bootstrapped env prod, tenant acme, teams billing, core: 9 change(s)"
    )


def test_plan_with_namespace_and_teams_manages_the_tenant_role_too() -> None:
    """--namespace with --team (a migration): the tenant-wide pair first, then the teams'."""
    t = team_target(namespaces=("acme-prod",))
    names = [s.subject for s in b.plan(EMPTY, t) if s.subject.startswith(("policy", "role"))]
    assert names == [
        "policy gtc-prod-acme",
        "policy gtc-prod-acme-billing",
        "policy gtc-prod-acme-core",
        "role gtc-prod-acme (auth/kubernetes)",
        "role gtc-prod-acme-billing (auth/kubernetes)",
        "role gtc-prod-acme-core (auth/kubernetes)",
    ]


def test_plan_with_teams_on_a_bootstrapped_vault_changes_nothing() -> None:
    """Idempotent per team as for the tenant."""
    t = team_target()
    steps = b.plan(bootstrapped_state(t), t)
    assert {s.verb for s in steps} == {"unchanged"}
    assert b.summary(steps, t, dry_run=False) == (
        "nothing to change: Vault is already bootstrapped for env prod, tenant acme, teams billing, core"
    )


def test_a_tenant_wide_role_left_behind_is_named_but_never_touched() -> None:
    """Teams only, and the tenant-wide role exists: one 'unchanged' line saying it still reads every team."""
    t = team_target()
    state = bootstrapped_state(t)
    left = b.VaultState(**{**vars(state), "roles": {**state.roles, "gtc-prod-acme": vault_role(target())}})
    steps = b.plan(left, t)
    assert [w for s in steps for w in s.writes] == []
    text = steps[-1].describe(dry_run=False)
    assert text.startswith("unchanged: role gtc-prod-acme (auth/kubernetes) (tenant-wide: ")
    assert "can still read every team" in text
    assert not any("tenant-wide" in s.describe(dry_run=False) for s in b.plan(state, t))


def test_team_drift_is_repaired_and_named() -> None:
    """A widened team policy and a team role bound to another namespace are written again."""
    t = team_target()
    state = bootstrapped_state(t)
    core = grant(t, "core")
    widened = (
        b.render_policy(t, core)
        + 'path "secret/data/greentic/prod/acme/billing/*" { capabilities = ["read"] }\n'
    )
    drifted = b.VaultState(
        **{
            **vars(state),
            "policies": {**state.policies, core.name: widened},
            "roles": {
                **state.roles,
                core.name: {**vault_role(t, core), "bound_service_account_namespaces": ["acme-billing"]},
            },
        }
    )
    changed = [s for s in b.plan(drifted, t) if s.verb != "unchanged"]
    assert [s.describe(dry_run=False) for s in changed] == [
        "updated policy gtc-prod-acme-core (rules differ from the read-only team policy)",
        "updated role gtc-prod-acme-core (auth/kubernetes) (bound_service_account_namespaces)",
    ]
    assert changed[0].writes == (
        b.Write("sys/policies/acl/gtc-prod-acme-core", {"policy": b.render_policy(t, core)}),
    )
    assert changed[1].writes[0].data["bound_service_account_namespaces"] == ["acme-core", "acme-core-eu"]


def test_a_policy_bootstrap_made_for_another_scope_is_never_rewritten() -> None:
    """Team core of tenant acme and tenant acme-core are both gtc-prod-acme-core: refused, nothing written."""
    other = target(tenant="acme-core")
    t = team_target()
    with pytest.raises(b.BootstrapError) as caught:
        b.plan_policy(b.render_policy(other), t, grant(t, "core"))
    assert str(caught.value) == (
        "policy gtc-prod-acme-core is managed by bootstrap for another scope (workers of env prod, tenant "
        "acme-core.): the names of two scopes collide; choose another team or tenant name"
    )
    # A hand-written policy of that name is drift, rewritten as before.
    assert b.plan_policy('path "x" { capabilities = ["read"] }', t, grant(t, "core")).verb == "update"


def test_team_flags_are_grouped_merged_and_sorted() -> None:
    """--team T=NS[,NS...] repeatable: a repeated team adds namespaces; no --namespace is needed."""
    args = parse(
        "--env", "prod", "--tenant", "acme",
        "--team", "core=acme-core-eu,acme-core", "--team", "billing=acme-billing", "--team", "core=acme-core",
        "--shared-team", "common",
    )  # fmt: skip
    t = b.target_from_args(args, {})
    assert t.namespaces == ()
    assert t.teams == TEAMS
    assert t.shared_team == "common"
    assert [g.name for g in t.grants] == ["gtc-prod-acme-billing", "gtc-prod-acme-core"]
    assert grant(t, "core").teams == ("core", "common")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --team TEAM=NS[,NS...] (one role per team, recommended) or --namespace NS"),
        (["--team", "core"], "--team 'core': name the team's namespaces: --team core=NS"),
        (["--team", "core="], "--team 'core=': name the team's namespaces"),
        (["--team", "Core=acme-core"], "--team 'Core' is not a lower-case RFC 1123 label"),
        (["--team", "=acme-core"], "--team is empty"),
        (["--team", "core=*"], "--team core '*' is refused"),
        (["--team", "core=acme-core,,x"], "--team core '' is not a Kubernetes namespace name"),
        (["--team", "core=Acme"], "--team core 'Acme' is not a Kubernetes namespace name"),
        (
            ["--team", "core=acme-a,acme-shared", "--team", "billing=acme-shared"],
            "namespace acme-shared is given for teams billing and core; its workers could log in with either",
        ),
        (["--team", "core=acme-core", "--shared-team", "../x"], "--shared-team '../x' is not"),
    ],
)
def test_bad_team_arguments_are_refused_before_any_io(argv: list[str], message: str) -> None:
    """Exit 2 naming the flag; Vault is never contacted."""
    err = io.StringIO()
    code = b.command(
        parse("--env", "prod", "--tenant", "acme", *argv),
        ENVIRON,
        admin_factory=no_vault,
        out=io.StringIO(),
        err=err,
    )
    assert code == b.EXIT_USAGE
    assert message in err.getvalue()


def test_run_with_teams_reads_every_managed_name_and_the_tenant_role() -> None:
    """read_state asks for each team's policy and role, and for the tenant-wide role (to name it)."""
    vault = RecordingVault({})
    b.run(vault, team_target(), dry_run=True, out=io.StringIO())
    assert {path for path in vault.reads if "/acl/" in path or "/role/" in path} == {
        "sys/policies/acl/gtc-prod-acme-billing",
        "sys/policies/acl/gtc-prod-acme-core",
        "auth/kubernetes/role/gtc-prod-acme-billing",
        "auth/kubernetes/role/gtc-prod-acme-core",
        "auth/kubernetes/role/gtc-prod-acme",
    }
    assert vault.writes == []
