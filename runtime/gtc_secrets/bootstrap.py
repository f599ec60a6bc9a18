"""``gtc-secrets bootstrap``: prepare Vault/OpenBao for the workers of one env + tenant, idempotently.

What it makes sure of (and nothing else):

- the Kubernetes auth method at ``VAULT_K8S_MOUNT`` (default ``kubernetes``) is enabled and configured;
- a KV version 2 engine at ``VAULT_KV_MOUNT`` (default ``secret``); an existing KV v1 mount there is an
  error, never upgraded behind the operator's back (an upgrade rewrites every entry);
- a transit engine at ``VAULT_TRANSIT_MOUNT`` (default ``transit``) with the key ``gtc-<env>-<tenant>``
  (aes256-gcm96, not exportable, no plaintext backup, deletion not allowed);
- per team (``--team TEAM=NS[,NS...]``, repeatable) the policy ``gtc-<env>-<tenant>-<team>``: ``read`` on
  the KV data and metadata of ``<prefix>/<env>/<tenant>/<team>/*`` and of the tenant's shared team
  (``--shared-team``, default ``default``), ``update`` on ``<transit>/decrypt/gtc-<env>-<tenant>``, nothing
  else; and the role of the same name bound to the worker ServiceAccount in that team's namespaces only.
  Vault itself then keeps one team from reading another's envelopes;
- with ``--namespace`` (today's form) the tenant-wide policy ``gtc-<env>-<tenant>``: ``read`` on
  ``<kv>/data/<prefix>/<env>/<tenant>/*`` and the same decrypt, and the role of that name;
- every role is bound to one ServiceAccount (``gtc-worker``) in the given namespaces only, with the
  audience, its own policy only (no ``default`` policy) and a short token TTL.

The design: read the current state (I/O), compute the changes with pure functions (``plan``), print them,
and apply them unless ``--dry-run`` (I/O). A second run finds nothing to change and says so. Each part has
a module of its own:

- ``bootstrap_target.py``: the flags and the environment, checked before any I/O, into a ``Target``;
- ``bootstrap_plan.py``: the pure plan (mounts, the transit key, the policy and role of each grant, the
  auth config and how its reviewer JWT is kept);
- ``bootstrap_vault.py``: the I/O edge (read the state over hvac, print and apply the steps);
- this module: the subcommand (its flags, exit codes, and how Vault's errors are reported). It re-exports
  the names its callers use (tests, the benchmark), so ``from gtc_secrets import bootstrap`` reaches them.

Credentials: ``VAULT_ADDR`` / ``VAULT_TOKEN`` (+ ``VAULT_CACERT``). Neither the token nor the reviewer
JWT is ever printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TextIO, TypeVar

import hvac.exceptions
import requests

from gtc_secrets import constants as c

# The names its callers (tests, bench) read from here are imported "as" themselves: mypy --strict
# re-exports only those, and this module stays the one they import.
# ruff: noqa: PLC0414
from gtc_secrets.bootstrap_plan import BootstrapError as BootstrapError
from gtc_secrets.bootstrap_plan import Step as Step
from gtc_secrets.bootstrap_plan import VaultState as VaultState
from gtc_secrets.bootstrap_plan import Write as Write
from gtc_secrets.bootstrap_plan import plan as plan
from gtc_secrets.bootstrap_plan import plan_auth_mount as plan_auth_mount
from gtc_secrets.bootstrap_plan import plan_k8s_config as plan_k8s_config
from gtc_secrets.bootstrap_plan import plan_kv_mount as plan_kv_mount
from gtc_secrets.bootstrap_plan import plan_policy as plan_policy
from gtc_secrets.bootstrap_plan import plan_role as plan_role
from gtc_secrets.bootstrap_plan import plan_transit_key as plan_transit_key
from gtc_secrets.bootstrap_plan import plan_transit_mount as plan_transit_mount
from gtc_secrets.bootstrap_plan import render_policy as render_policy
from gtc_secrets.bootstrap_plan import summary as summary
from gtc_secrets.bootstrap_target import DEFAULT_AUDIENCE as DEFAULT_AUDIENCE
from gtc_secrets.bootstrap_target import DEFAULT_SERVICE_ACCOUNT as DEFAULT_SERVICE_ACCOUNT
from gtc_secrets.bootstrap_target import (
    DEFAULT_TOKEN_MAX_TTL,
    DEFAULT_TOKEN_TTL,
    UsageError,
    connection_from_environ,
)
from gtc_secrets.bootstrap_target import Connection as Connection
from gtc_secrets.bootstrap_target import Grant as Grant
from gtc_secrets.bootstrap_target import Target as Target
from gtc_secrets.bootstrap_target import parse_duration as parse_duration
from gtc_secrets.bootstrap_target import target_from_args as target_from_args
from gtc_secrets.bootstrap_vault import HvacVaultAdmin
from gtc_secrets.bootstrap_vault import VaultAdmin as VaultAdmin
from gtc_secrets.bootstrap_vault import run as run
from gtc_secrets.settings import is_plain_http, plain_http_warning

# Same exit codes as the rest of the CLI (see gtc_secrets.cli).
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_UNAVAILABLE: Final = 4

COMMAND: Final = "bootstrap"

AdminFactory = Callable[[Connection], VaultAdmin]


def _vault_error(exc: Exception) -> tuple[int, str] | None:
    """Exit code and message for an error from hvac/requests (None: not one of theirs)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return EXIT_CONFIG, f"TLS error talking to Vault (check {c.ENV_VAULT_CACERT})"
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return EXIT_UNAVAILABLE, "Vault is unreachable"
    if isinstance(exc, hvac.exceptions.VaultDown):
        return EXIT_UNAVAILABLE, "Vault is sealed or unavailable (503)"
    if isinstance(exc, hvac.exceptions.Forbidden):
        return (
            EXIT_FAILED,
            f"Vault refused a request (403): does {c.ENV_VAULT_TOKEN} have admin rights? ({exc})",
        )
    if isinstance(exc, hvac.exceptions.VaultError):
        # hvac's message is Vault's error list plus method and URL; it never holds the request body.
        return EXIT_FAILED, f"Vault error: {exc}"
    return None


def _close(vault: VaultAdmin) -> None:
    close = getattr(vault, "close", None)
    if callable(close):
        close()


def command(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    *,
    admin_factory: AdminFactory = HvacVaultAdmin,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``gtc-secrets bootstrap``: returns the exit code; errors go to ``err`` (stderr)."""
    stdout = out if out is not None else sys.stdout
    stderr = err if err is not None else sys.stderr
    prefix = f"gtc-secrets {COMMAND}: error:"
    try:
        target = target_from_args(args, environ)
        connection = connection_from_environ(environ)
    except UsageError as exc:
        print(f"{prefix} {exc}", file=stderr)
        return EXIT_USAGE
    if is_plain_http(connection.addr):
        warning = plain_http_warning(connection.addr, "the operator's VAULT_TOKEN")
        print(f"gtc-secrets {COMMAND}: warning: {warning}", file=stderr)
    vault = admin_factory(connection)
    try:
        run(vault, target, dry_run=bool(args.dry_run), out=stdout)
    except BootstrapError as exc:
        print(f"{prefix} {exc}", file=stderr)
        return EXIT_FAILED
    except Exception as exc:
        mapped = _vault_error(exc)
        if mapped is None:
            raise
        print(f"{prefix} {mapped[1]} ({connection.addr})", file=stderr)
        return mapped[0]
    finally:
        _close(vault)
    return EXIT_OK


# Generic so that a CLI using its own ArgumentParser subclass (parser_class=...) type-checks too.
_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def register(
    subparsers: argparse._SubParsersAction[_Parser],
    *,
    environ: Mapping[str, str] | None = None,
    admin_factory: AdminFactory = HvacVaultAdmin,
) -> None:
    """Add the ``bootstrap`` subcommand; its ``func(args) -> int`` reads ``environ`` (default os.environ)."""
    parser = subparsers.add_parser(
        COMMAND,
        help="prepare Vault for one env + tenant (auth, KV-v2, transit key, policies, roles); idempotent",
        description="Prepare Vault for the workers of one env + tenant: Kubernetes auth, KV-v2, transit and "
        "the tenant's key, and a read-only policy and role per team (--team) bound to the worker "
        "ServiceAccount in that team's namespaces, or one for the whole tenant (--namespace). "
        "Idempotent; prints every change. Admin credentials from VAULT_ADDR / VAULT_TOKEN "
        "(/ VAULT_CACERT); mounts from VAULT_K8S_MOUNT, VAULT_KV_MOUNT, VAULT_KV_PREFIX, "
        "VAULT_TRANSIT_MOUNT.",
    )
    parser.add_argument("--env", required=True, help="environment, e.g. prod")
    parser.add_argument("--tenant", required=True, help="tenant, e.g. acme")
    parser.add_argument(
        "--team",
        action="append",
        metavar="TEAM=NS[,NS...]",
        help="a team and the namespaces of its workers: policy and role gtc-<env>-<tenant>-<team>, reading "
        "only that team and the shared team (repeat for several teams; recommended)",
    )
    parser.add_argument(
        "--shared-team",
        default=c.DEFAULT_SHARED_TEAM,
        metavar="TEAM",
        help=f"the tenant's team every team may read too (default {c.DEFAULT_SHARED_TEAM})",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="namespace of the tenant-wide role gtc-<env>-<tenant>, whose workers read every team "
        "(repeat for several; '*' is refused)",
    )
    parser.add_argument(
        "--service-account",
        default=DEFAULT_SERVICE_ACCOUNT,
        help=f"the workers' ServiceAccount (default {DEFAULT_SERVICE_ACCOUNT}; '*' is refused)",
    )
    parser.add_argument("--kubernetes-host", metavar="URL", help="https URL of the Kubernetes API server")
    parser.add_argument("--kubernetes-ca", metavar="FILE", help="PEM CA bundle of the Kubernetes API server")
    parser.add_argument(
        "--token-reviewer-jwt", metavar="FILE", help="file holding the JWT Vault uses to call TokenReview"
    )
    parser.add_argument(
        "--replace-token-reviewer-jwt",
        action="store_true",
        help="write --token-reviewer-jwt even though one is set (Vault never returns it to compare)",
    )
    parser.add_argument(
        "--audience", default=DEFAULT_AUDIENCE, help=f"token audience (default {DEFAULT_AUDIENCE})"
    )
    parser.add_argument(
        "--token-ttl", default=DEFAULT_TOKEN_TTL, help=f"Vault token TTL (default {DEFAULT_TOKEN_TTL})"
    )
    parser.add_argument(
        "--token-max-ttl",
        default=DEFAULT_TOKEN_MAX_TTL,
        help=f"Vault token max TTL (default {DEFAULT_TOKEN_MAX_TTL})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")

    def func(args: argparse.Namespace) -> int:
        return command(args, os.environ if environ is None else environ, admin_factory=admin_factory)

    parser.set_defaults(func=func)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m gtc_secrets.bootstrap ...`` (the same as ``gtc-secrets bootstrap ...``)."""
    parser = argparse.ArgumentParser(prog="gtc-secrets")
    register(parser.add_subparsers(dest="subcommand", required=True), environ=environ)
    args = parser.parse_args([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
