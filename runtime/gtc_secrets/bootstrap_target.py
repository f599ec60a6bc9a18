"""What ``gtc-secrets bootstrap`` is asked to set up, read once from the flags and the environment.

``target_from_args`` checks every flag (and the mount variables) and reads the files the flags name into a
``Target``: one env + tenant, its grants (one read-only policy and role per team, or one tenant-wide), and
how its workers reach Vault. ``connection_from_environ`` reads the admin ``Connection``. Both run before
any Vault I/O; a refusal is a ``UsageError`` that names the flag or variable. The reviewer JWT and the
admin token are credentials: never in a message or a repr.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gtc_secrets import constants as c
from gtc_secrets.refs import check_scope_segment
from gtc_secrets.settings import SettingsError, parse_vault_endpoint

DEFAULT_SERVICE_ACCOUNT: Final = "gtc-worker"
DEFAULT_AUDIENCE: Final = "vault"
# Short-lived worker tokens: the runtime logs in again (re-reading its ServiceAccount token) before expiry.
DEFAULT_TOKEN_TTL: Final = "15m"  # noqa: S105 - a duration, not a password
DEFAULT_TOKEN_MAX_TTL: Final = "1h"  # noqa: S105 - a duration, not a password
# Longer than this is not a "short" token any more; refuse rather than silently cap.
MAX_TOKEN_TTL_SECONDS: Final = 24 * 3600

# Kubernetes object names: a namespace is an RFC 1123 label, a ServiceAccount an RFC 1123 subdomain.
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MOUNT: Final = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
_DURATION: Final = re.compile(r"(\d+)([smh]?)")
_DURATION_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600}
_JWT: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class UsageError(ValueError):
    """A flag or environment variable is invalid; found before any I/O."""


@dataclass(frozen=True)
class Grant:
    """One policy and the role of the same name: the namespaces whose workers may read which teams."""

    name: str
    namespaces: tuple[str, ...]
    # The teams whose secrets the policy reads (own team first, then the shared team); None: every team
    # of the tenant (the tenant-wide role of installs made before per-team roles).
    teams: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Target:
    """What the operator asked for: one env + tenant and how its workers reach Vault."""

    env: str
    tenant: str
    # Namespaces of the tenant-wide role; empty when only per-team roles are asked for.
    namespaces: tuple[str, ...]
    # (team, its namespaces), sorted by team: one policy and role per team.
    teams: tuple[tuple[str, tuple[str, ...]], ...] = ()
    shared_team: str = c.DEFAULT_SHARED_TEAM
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    audience: str = DEFAULT_AUDIENCE
    token_ttl: int = 15 * 60
    token_max_ttl: int = 60 * 60
    k8s_mount: str = c.DEFAULT_K8S_MOUNT
    kv_mount: str = c.DEFAULT_KV_MOUNT
    kv_prefix: str = c.DEFAULT_KV_PREFIX
    transit_mount: str = c.DEFAULT_TRANSIT_MOUNT
    kubernetes_host: str | None = None
    kubernetes_ca_pem: str | None = None
    # A credential: never in a repr, a log line or the output.
    token_reviewer_jwt: str | None = field(default=None, repr=False)
    replace_token_reviewer_jwt: bool = False

    @property
    def name(self) -> str:
        """The transit key and the tenant-wide policy and role share this name (the webhook's default role
        template)."""
        return c.role_name(self.env, self.tenant)

    @property
    def tenant_grant(self) -> Grant:
        return Grant(self.name, self.namespaces)

    @property
    def grants(self) -> tuple[Grant, ...]:
        """The policy + role pairs to manage, tenant-wide first (when asked for), then one per team."""
        teams = tuple(
            Grant(
                c.team_role_name(self.env, self.tenant, team),
                namespaces,
                # dict.fromkeys: the shared team's own role reads one team, not the same one twice.
                tuple(dict.fromkeys((team, self.shared_team))),
            )
            for team, namespaces in self.teams
        )
        return ((self.tenant_grant,) if self.namespaces else ()) + teams


@dataclass(frozen=True)
class Connection:
    addr: str
    token: str = field(repr=False)
    ca_cert: Path | None = None


def parse_duration(value: str, flag: str) -> int:
    """Seconds in ``900``, ``900s``, ``15m`` or ``1h``."""
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise UsageError(f"{flag} {value!r} is not a duration like 900s, 15m or 1h")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def check_namespace(value: str, flag: str = "--namespace") -> str:
    if "*" in value:
        # Vault would read "*" as "every namespace": the opposite of binding a tenant's namespaces.
        raise UsageError(f"{flag} '*' is refused: bind the tenant's namespaces by name")
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise UsageError(f"{flag} {value!r} is not a Kubernetes namespace name (RFC 1123 label)")
    return value


def parse_teams(values: Sequence[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--team TEAM=NS[,NS...]`` flags as (team, sorted namespaces), sorted by team; a repeated team
    adds namespaces. A namespace may belong to one team only: Vault cannot tell which role a worker is
    meant to use, so a namespace bound to two team roles would let its workers read both teams."""
    teams: dict[str, set[str]] = {}
    for value in values:
        team, sep, listed = value.partition("=")
        try:
            check_scope_segment(team, "--team")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not sep or not listed:
            raise UsageError(
                f"--team {value!r}: name the team's namespaces: --team {team}=NS or --team {team}=NS1,NS2"
            )
        namespaces = teams.setdefault(team, set())
        namespaces.update(check_namespace(ns, f"--team {team}") for ns in listed.split(","))
    owner: dict[str, str] = {}
    for team, namespaces in sorted(teams.items()):
        for namespace in sorted(namespaces):
            if namespace in owner:
                raise UsageError(
                    f"--team: namespace {namespace} is given for teams {owner[namespace]} and {team}; its "
                    "workers could log in with either role and read both teams' secrets"
                )
            owner[namespace] = team
    return tuple((team, tuple(sorted(namespaces))) for team, namespaces in sorted(teams.items()))


def check_service_account(value: str) -> str:
    if "*" in value:
        raise UsageError("--service-account '*' is refused: bind the worker ServiceAccount by name")
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise UsageError(f"--service-account {value!r} is not a Kubernetes ServiceAccount name")
    return value


def check_mount(value: str, name: str) -> str:
    mount = value.strip("/")
    if not _MOUNT.fullmatch(mount):
        raise UsageError(f"{name}={value!r} must be a path of [A-Za-z0-9_-] segments")
    return mount


def check_kubernetes_host(value: str) -> str:
    # Vault sends the reviewer JWT to this host: plain HTTP would leak it.
    if not value.startswith("https://") or len(value) <= len("https://") or any(ch.isspace() for ch in value):
        raise UsageError(f"--kubernetes-host {value!r} must be an https:// URL")
    return value.rstrip("/")


def check_ca_pem(text: str, source: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"--kubernetes-ca {source}: no PEM certificate in the file")
    return text.strip() + "\n"


def check_reviewer_jwt(text: str, source: str) -> str:
    token = text.strip()
    if not _JWT.fullmatch(token):
        # The content is a credential: say what is wrong, never show it.
        raise UsageError(f"--token-reviewer-jwt {source}: the file does not hold one JWT")
    return token


def target_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    """Check every flag (and the mount env vars) and read the files the flags name. No Vault I/O."""
    try:
        env = check_scope_segment(args.env, "--env")
        tenant = check_scope_segment(args.tenant, "--tenant")
        shared_team = check_scope_segment(args.shared_team, "--shared-team")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    namespaces = tuple(sorted({check_namespace(ns) for ns in args.namespace or ()}))
    teams = parse_teams(args.team or ())
    if not namespaces and not teams:
        raise UsageError(
            "give --team TEAM=NS[,NS...] (one role per team, recommended) or --namespace NS "
            "(one tenant-wide role)"
        )
    service_account = check_service_account(args.service_account)
    audience = args.audience.strip()
    if not audience or "*" in audience or any(ch.isspace() for ch in audience):
        raise UsageError(f"--audience {args.audience!r} must be one non-empty audience, without '*'")
    ttl = parse_duration(args.token_ttl, "--token-ttl")
    max_ttl = parse_duration(args.token_max_ttl, "--token-max-ttl")
    if not 0 < ttl <= max_ttl <= MAX_TOKEN_TTL_SECONDS:
        raise UsageError(
            f"token TTLs must satisfy 0 < --token-ttl ({ttl}s) <= --token-max-ttl ({max_ttl}s) "
            f"<= {MAX_TOKEN_TTL_SECONDS}s"
        )
    if args.replace_token_reviewer_jwt and args.token_reviewer_jwt is None:
        raise UsageError("--replace-token-reviewer-jwt needs --token-reviewer-jwt FILE")
    return Target(
        env=env,
        tenant=tenant,
        namespaces=namespaces,
        teams=teams,
        shared_team=shared_team,
        service_account=service_account,
        audience=audience,
        token_ttl=ttl,
        token_max_ttl=max_ttl,
        k8s_mount=check_mount(
            environ.get(c.ENV_VAULT_K8S_MOUNT) or c.DEFAULT_K8S_MOUNT, c.ENV_VAULT_K8S_MOUNT
        ),
        kv_mount=check_mount(environ.get(c.ENV_VAULT_KV_MOUNT) or c.DEFAULT_KV_MOUNT, c.ENV_VAULT_KV_MOUNT),
        kv_prefix=check_mount(
            environ.get(c.ENV_VAULT_KV_PREFIX) or c.DEFAULT_KV_PREFIX, c.ENV_VAULT_KV_PREFIX
        ),
        transit_mount=check_mount(
            environ.get(c.ENV_VAULT_TRANSIT_MOUNT) or c.DEFAULT_TRANSIT_MOUNT, c.ENV_VAULT_TRANSIT_MOUNT
        ),
        kubernetes_host=check_kubernetes_host(args.kubernetes_host) if args.kubernetes_host else None,
        kubernetes_ca_pem=(
            check_ca_pem(_read_text(args.kubernetes_ca, "--kubernetes-ca"), args.kubernetes_ca)
            if args.kubernetes_ca
            else None
        ),
        token_reviewer_jwt=(
            check_reviewer_jwt(
                _read_text(args.token_reviewer_jwt, "--token-reviewer-jwt"), args.token_reviewer_jwt
            )
            if args.token_reviewer_jwt
            else None
        ),
        replace_token_reviewer_jwt=bool(args.replace_token_reviewer_jwt),
    )


def connection_from_environ(environ: Mapping[str, str]) -> Connection:
    """VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT. The admin token travels with every request, so the address
    follows the runtime's rule: https://, or plain http only with GREENTIC_VAULT_INSECURE_HTTP=true (the
    Vault the workers of such an environment use must be bootstrapped too)."""
    if not environ.get(c.ENV_VAULT_ADDR):
        raise UsageError(f"{c.ENV_VAULT_ADDR} must be set to an https:// URL")
    try:
        addr, ca = parse_vault_endpoint(environ)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    token = environ.get(c.ENV_VAULT_TOKEN) or ""
    if not token:
        raise UsageError(f"{c.ENV_VAULT_TOKEN} is not set (bootstrap needs an operator token)")
    if ca is not None and not ca.is_file():
        raise UsageError(f"{c.ENV_VAULT_CACERT}={ca}: no such file")
    return Connection(addr=addr, token=token, ca_cert=ca)


def _read_text(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"{flag} {path}: cannot read ({reason})") from None
