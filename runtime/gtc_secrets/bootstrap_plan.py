"""The plan of ``gtc-secrets bootstrap``, pure: Vault's current state and the ``Target`` in, the steps out.

``plan`` compares a ``VaultState`` (what ``bootstrap_vault.read_state`` read) with what the target asks
for and returns every ``Step`` in the order it must be applied: the auth method, the KV-v2 and transit
mounts, the tenant's transit key, the read-only policy of each grant (``render_policy``), the auth
config, and the role of each grant (``desired_role``). A step carries the writes it needs; applying them
is ``bootstrap_vault.run``'s job. A state that cannot be repaired without guessing (a KV v1 mount, a
transit key that may have been exported, a policy bootstrap wrote for another scope) raises
``BootstrapError`` before any write.

``auth/<mount>/config`` is special: a write replaces the whole config, and a read never returns the
``token_reviewer_jwt`` (only ``token_reviewer_jwt_set``). So the config is rewritten from what Vault
returns plus what the flags give; when something must change while a reviewer JWT is set and
``--token-reviewer-jwt`` is not given, bootstrap stops with an error instead of dropping it. A given
``--token-reviewer-jwt`` cannot be compared with the stored one: it is written when Vault has none (or
the config is rewritten anyway, or with ``--replace-token-reviewer-jwt``), and otherwise left as is, which
the output says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gtc_secrets import constants as c
from gtc_secrets.bootstrap_target import Grant, Target

TRANSIT_KEY_TYPE: Final = "aes256-gcm96"
KV_VERSION: Final = "2"
K8S_AUTH_TYPE: Final = "kubernetes"
KV_TYPE: Final = "kv"
TRANSIT_TYPE: Final = "transit"

# What `auth/<mount>/config` answers but must not be written back.
K8S_CONFIG_READ_ONLY: Final = frozenset({"token_reviewer_jwt_set"})
K8S_HOST: Final = "kubernetes_host"
K8S_CA: Final = "kubernetes_ca_cert"
# A field name, not a credential.
K8S_REVIEWER_JWT: Final = "token_reviewer_jwt"


class BootstrapError(RuntimeError):
    """Vault's current state conflicts with what bootstrap must set up; nothing is guessed."""


@dataclass(frozen=True)
class VaultState:
    """What bootstrap reads from Vault, as Vault answers it (``None``: does not exist)."""

    auth_mounts: Mapping[str, Mapping[str, Any]]
    secret_mounts: Mapping[str, Mapping[str, Any]]
    k8s_config: Mapping[str, Any] | None
    transit_key: Mapping[str, Any] | None
    policies: Mapping[str, str]  # name -> rules (HCL), for the names bootstrap manages that exist
    roles: Mapping[str, Mapping[str, Any]]  # name -> role, likewise


Verb = Literal["create", "update", "unchanged"]


@dataclass(frozen=True)
class Write:
    """One Vault write: POST ``/v1/<path>`` with ``data`` (which may hold a credential: no repr)."""

    path: str
    data: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Step:
    verb: Verb
    subject: str
    details: tuple[str, ...] = ()
    writes: tuple[Write, ...] = ()

    def describe(self, *, dry_run: bool) -> str:
        suffix = f" ({'; '.join(self.details)})" if self.details else ""
        if self.verb == "unchanged":
            return f"unchanged: {self.subject}{suffix}"
        verb = {"create": "created", "update": "updated"}[self.verb]
        if dry_run:
            verb = {"create": "would create", "update": "would update"}[self.verb]
        return f"{verb} {self.subject}{suffix}"


MANAGED_HEADER: Final = "# Managed by gtc-secrets bootstrap: "


def _rule(path: str, capability: str) -> str:
    return f'path "{path}" {{\n  capabilities = ["{capability}"]\n}}\n'


def render_policy(target: Target, grant: Grant | None = None) -> str:
    """A grant's read-only policy (HCL); the tenant-wide one by default. Nothing but these paths."""
    grant = grant or target.tenant_grant
    decrypt = _rule(f"{target.transit_mount}/decrypt/{target.name}", "update")
    tenant = f"{target.kv_prefix}/{target.env}/{target.tenant}"
    # Metadata (versions, never values) of the same paths: a worker under `exec --watch` checks which
    # version it holds.
    if grant.teams is None:
        return (
            f"{MANAGED_HEADER}workers of env {target.env}, tenant {target.tenant}.\n"
            "# Read their envelopes, unwrap data keys with their tenant's transit key; nothing else.\n"
            + "\n".join(
                [_rule(f"{target.kv_mount}/{kind}/{tenant}/*", "read") for kind in ("data", "metadata")]
                + [decrypt]
            )
        )
    reads = [
        _rule(f"{target.kv_mount}/{kind}/{tenant}/{team}/*", "read")
        for kind in ("data", "metadata")
        for team in grant.teams
    ]
    return (
        f"{MANAGED_HEADER}workers of env {target.env}, tenant {target.tenant}, team {grant.teams[0]}.\n"
        f"# Read the envelopes of their team and of the shared team {target.shared_team}, unwrap data keys "
        "with their tenant's transit key; nothing else.\n" + "\n".join([*reads, decrypt])
    )


def desired_role(target: Target, grant: Grant | None = None) -> dict[str, Any]:
    grant = grant or target.tenant_grant
    return {
        "bound_service_account_names": [target.service_account],
        "bound_service_account_namespaces": list(grant.namespaces),
        "audience": target.audience,
        "token_policies": [grant.name],
        # "Exactly its own policy": the default policy's token self-management is not needed, since
        # the runtime logs in again instead of renewing.
        "token_no_default_policy": True,
        "token_ttl": target.token_ttl,
        "token_max_ttl": target.token_max_ttl,
    }


def _mount_key(mount: str) -> str:
    return f"{mount}/"


def _plan_typed_mount(
    mounts: Mapping[str, Mapping[str, Any]],
    mount: str,
    *,
    api: str,
    kind: str,
    noun: str,
    shown: str,
    expected: str,
    env_var: str,
) -> Step:
    """A mount of type ``kind`` at ``mount``: created when absent, refused (naming ``env_var``) when the path
    holds another type. ``api`` is where Vault enables it (``sys/auth`` or ``sys/mounts``)."""
    subject = f"{noun} {_mount_key(mount)} ({kind})"
    current = mounts.get(_mount_key(mount))
    if current is None:
        return Step("create", subject, writes=(Write(f"{api}/{mount}", {"type": kind}),))
    if current.get("type") != kind:
        raise BootstrapError(
            f"{shown} is a {current.get('type')!r} {noun}, not {expected}: set {env_var} to another path"
        )
    return Step("unchanged", subject)


def plan_auth_mount(auth_mounts: Mapping[str, Mapping[str, Any]], target: Target) -> Step:
    return _plan_typed_mount(
        auth_mounts,
        target.k8s_mount,
        api="sys/auth",
        kind=K8S_AUTH_TYPE,
        noun="auth method",
        shown=f"auth/{target.k8s_mount}/",
        expected=repr(K8S_AUTH_TYPE),
        env_var=c.ENV_VAULT_K8S_MOUNT,
    )


def plan_kv_mount(secret_mounts: Mapping[str, Mapping[str, Any]], target: Target) -> Step:
    subject = f"secrets engine {_mount_key(target.kv_mount)} (kv-v2)"
    current = secret_mounts.get(_mount_key(target.kv_mount))
    if current is None:
        return Step(
            "create",
            subject,
            writes=(
                Write(f"sys/mounts/{target.kv_mount}", {"type": KV_TYPE, "options": {"version": KV_VERSION}}),
            ),
        )
    kind = current.get("type")
    options = current.get("options") or {}
    version = str(options.get("version", "1")) if isinstance(options, Mapping) else "1"
    if kind == KV_TYPE and version == KV_VERSION:
        return Step("unchanged", subject)
    if kind in (KV_TYPE, "generic"):
        raise BootstrapError(
            f"{_mount_key(target.kv_mount)} is a KV version {version} mount; bootstrap does not upgrade it "
            "(an upgrade rewrites every entry and changes its API paths). Upgrade it yourself "
            f"(sys/mounts/{target.kv_mount}/tune options version=2) "
            f"or set {c.ENV_VAULT_KV_MOUNT} to another path"
        )
    raise BootstrapError(
        f"{_mount_key(target.kv_mount)} is a {kind!r} secrets engine, not KV version 2: "
        f"set {c.ENV_VAULT_KV_MOUNT} to another path"
    )


def plan_transit_mount(secret_mounts: Mapping[str, Mapping[str, Any]], target: Target) -> Step:
    return _plan_typed_mount(
        secret_mounts,
        target.transit_mount,
        api="sys/mounts",
        kind=TRANSIT_TYPE,
        noun="secrets engine",
        shown=_mount_key(target.transit_mount),
        expected="transit",
        env_var=c.ENV_VAULT_TRANSIT_MOUNT,
    )


def plan_transit_key(key: Mapping[str, Any] | None, target: Target) -> Step:
    subject = f"transit key {target.transit_mount}/keys/{target.name}"
    path = f"{target.transit_mount}/keys/{target.name}"
    if key is None:
        return Step(
            "create",
            subject,
            details=(TRANSIT_KEY_TYPE, "not exportable", "deletion not allowed"),
            writes=(
                Write(path, {"type": TRANSIT_KEY_TYPE, "exportable": False, "allow_plaintext_backup": False}),
            ),
        )
    if key.get("type") != TRANSIT_KEY_TYPE:
        raise BootstrapError(
            f"{subject} exists with type {key.get('type')!r}, not {TRANSIT_KEY_TYPE!r}; a key's type cannot "
            "change: rotate the tenant onto a new key by hand"
        )
    # Vault cannot take these back once granted: the key material may already have left Vault.
    for flag in ("exportable", "allow_plaintext_backup"):
        if key.get(flag):
            raise BootstrapError(
                f"{subject} has {flag}=true, which Vault cannot revoke; the key may have been exported. "
                "Create a new key and re-seed the tenant's secrets"
            )
    if key.get("deletion_allowed"):
        return Step(
            "update",
            subject,
            details=("deletion_allowed: true -> false",),
            writes=(Write(f"{path}/config", {"deletion_allowed": False}),),
        )
    return Step("unchanged", subject)


def plan_policy(current: str | None, target: Target, grant: Grant | None = None) -> Step:
    grant = grant or target.tenant_grant
    subject = f"policy {grant.name}"
    policy = render_policy(target, grant)
    write = Write(f"sys/policies/acl/{grant.name}", {"policy": policy})
    if current is None:
        return Step("create", subject, writes=(write,))
    theirs, ours = current.strip().partition("\n")[0], policy.partition("\n")[0]
    if theirs.startswith(MANAGED_HEADER) and theirs != ours:
        # Names are joined with "-": tenant acme team core, tenant acme-core both are gtc-prod-acme-core;
        # rewriting the other scope's policy would cut its workers off: stop before any write.
        raise BootstrapError(
            f"{subject} is managed by bootstrap for another scope ({theirs.removeprefix(MANAGED_HEADER)}): "
            "the names of two scopes collide; choose another team or tenant name"
        )
    if current.strip() != policy.strip():
        kind = "tenant" if grant.teams is None else "team"
        return Step(
            "update", subject, details=(f"rules differ from the read-only {kind} policy",), writes=(write,)
        )
    return Step("unchanged", subject)


def _same(current: Any, desired: Any) -> bool:
    if isinstance(desired, list):
        return isinstance(current, list) and sorted(map(str, current)) == sorted(map(str, desired))
    return bool(current == desired)


def plan_role(current: Mapping[str, Any] | None, target: Target, grant: Grant | None = None) -> Step:
    grant = grant or target.tenant_grant
    subject = f"role {grant.name} (auth/{target.k8s_mount})"
    desired = desired_role(target, grant)
    write = Write(f"auth/{target.k8s_mount}/role/{grant.name}", desired)
    if current is None:
        return Step("create", subject, writes=(write,))
    changed = tuple(key for key, value in desired.items() if not _same(current.get(key), value))
    if changed:
        return Step("update", subject, details=changed, writes=(write,))
    return Step("unchanged", subject)


def _normalise_pem(text: Any) -> str:
    return "\n".join(line.strip() for line in str(text or "").strip().splitlines())


def plan_k8s_config(current: Mapping[str, Any] | None, target: Target) -> Step:
    """Rewrite ``auth/<mount>/config`` only when needed, keeping every field already set.

    A write replaces the whole config, so the payload is what Vault returned plus the given flags. The
    reviewer JWT is never returned; see the module docstring for how it is kept.
    """
    subject = f"auth/{target.k8s_mount}/config"
    path = f"auth/{target.k8s_mount}/config"
    jwt = target.token_reviewer_jwt
    if current is None:
        if target.kubernetes_host is None:
            raise BootstrapError(f"{subject} is not configured yet: --kubernetes-host is required")
        data: dict[str, Any] = {K8S_HOST: target.kubernetes_host}
        details = [K8S_HOST]
        if target.kubernetes_ca_pem is not None:
            data[K8S_CA] = target.kubernetes_ca_pem
            details.append(K8S_CA)
        if jwt is not None:
            data[K8S_REVIEWER_JWT] = jwt
            details.append(K8S_REVIEWER_JWT)
        return Step("create", subject, details=tuple(details), writes=(Write(path, data),))

    data = {key: value for key, value in current.items() if key not in K8S_CONFIG_READ_ONLY}
    changed: list[str] = []
    if (
        target.kubernetes_host is not None
        and str(current.get(K8S_HOST) or "").rstrip("/") != target.kubernetes_host
    ):
        data[K8S_HOST] = target.kubernetes_host
        changed.append(K8S_HOST)
    if target.kubernetes_ca_pem is not None and _normalise_pem(current.get(K8S_CA)) != _normalise_pem(
        target.kubernetes_ca_pem
    ):
        data[K8S_CA] = target.kubernetes_ca_pem
        changed.append(K8S_CA)
    jwt_is_set = bool(current.get("token_reviewer_jwt_set"))
    notes: list[str] = []
    if jwt is not None:
        if not jwt_is_set:
            changed.append(K8S_REVIEWER_JWT)
        elif target.replace_token_reviewer_jwt:
            changed.append(f"{K8S_REVIEWER_JWT} replaced")
        elif changed:
            notes.append(f"{K8S_REVIEWER_JWT} written again from --token-reviewer-jwt")
        else:
            notes.append(
                f"{K8S_REVIEWER_JWT} is set; Vault never returns it, so it was not compared with "
                "--token-reviewer-jwt (add --replace-token-reviewer-jwt to write it)"
            )
        if changed:
            data[K8S_REVIEWER_JWT] = jwt
    elif changed and jwt_is_set:
        raise BootstrapError(
            f"{subject}: {', '.join(changed)} must change, but a write replaces the whole config and Vault "
            f"does not return the {K8S_REVIEWER_JWT} that is set, so it would be dropped. "
            "Pass --token-reviewer-jwt FILE again"
        )
    if not changed:
        return Step("unchanged", subject, details=tuple(notes))
    return Step("update", subject, details=tuple(changed + notes), writes=(Write(path, data),))


def plan_tenant_role_left(roles: Mapping[str, Mapping[str, Any]], target: Target) -> list[Step]:
    """With per-team roles only, an existing tenant-wide role is left as it is (bootstrap never deletes),
    but said: as long as it exists, the workers of its namespaces may still read every team."""
    if target.namespaces or target.name not in roles:
        return []
    note = (
        "tenant-wide: workers of its namespaces can still read every team; "
        f"delete it once they use per-team roles (auth/{target.k8s_mount}/role/{target.name})"
    )
    return [Step("unchanged", f"role {target.name} (auth/{target.k8s_mount})", details=(note,))]


def plan(state: VaultState, target: Target) -> list[Step]:
    """Every step, in the order they must be applied (mounts, key, policies before the roles using them)."""
    grants = target.grants
    return [
        plan_auth_mount(state.auth_mounts, target),
        plan_kv_mount(state.secret_mounts, target),
        plan_transit_mount(state.secret_mounts, target),
        plan_transit_key(state.transit_key, target),
        *(plan_policy(state.policies.get(grant.name), target, grant) for grant in grants),
        plan_k8s_config(state.k8s_config, target),
        *(plan_role(state.roles.get(grant.name), target, grant) for grant in grants),
        *plan_tenant_role_left(state.roles, target),
    ]


def summary(steps: Sequence[Step], target: Target, *, dry_run: bool) -> str:
    changes = sum(step.verb != "unchanged" for step in steps)
    scope = f"env {target.env}, tenant {target.tenant}"
    if target.teams:
        scope += f", team{'s' if len(target.teams) > 1 else ''} {', '.join(team for team, _ in target.teams)}"
    if changes == 0:
        return f"nothing to change: Vault is already bootstrapped for {scope}"
    if dry_run:
        return f"dry run: {changes} change(s) for {scope} not applied"
    return f"bootstrapped {scope}: {changes} change(s)"
