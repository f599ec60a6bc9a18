"""``gtc-secrets``: exec / get (worker side), put / bootstrap (operator side).

Exit codes (documented in README "Worker runtime"):

====  =====================================================================================
0     success
1     a secret could not be resolved or stored (missing, forbidden, invalid reference or envelope)
2     usage error (bad arguments)
3     configuration error (environment variables, CA bundle or TLS verification, token file)
4     Vault unavailable for the whole boot timeout
75    ``exec --watch --on-change exit``: a secret has a new version (Kubernetes restarts the container)
126   ``exec``: the command cannot be executed
127   ``exec``: the command was not found
====  =====================================================================================

With ``exec --watch`` the runtime stays as the command's parent and, when the command exits on its own,
exits with its status: its exit code, or 128 + N when signal N killed it (the shell's convention).

Errors go to stderr and name references, env var names and paths, never values.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gtc_secrets import __version__
from gtc_secrets import constants as c
from gtc_secrets.backends import SecretsBackend, VaultBackend, make_backend
from gtc_secrets.bootstrap import register as register_bootstrap
from gtc_secrets.envelope import EnvelopeError, SecretValue
from gtc_secrets.refs import (
    InvalidReference,
    Scope,
    SecretRef,
    check_scope_segment,
    is_reference,
    parse_long_reference,
    parse_reference,
)
from gtc_secrets.resolve import BootTimeout, ResolveError
from gtc_secrets.seed import AdminVault, HvacAdminVault, SeedError, Stored, put_secret, strip_one_newline
from gtc_secrets.settings import (
    OPERATOR_TRAFFIC,
    AdminSettings,
    RuntimeSettings,
    SettingsError,
    WatchSettings,
    parse_duration,
    parse_watch_interval,
    plain_http_warning,
)
from gtc_secrets.supervisor import EXIT_SECRETS_CHANGED, OnChange, supervise
from gtc_secrets.vault import (
    TLSConfigError,
    TokenFileError,
    VaultError,
    VaultTLSError,
    VaultUnavailable,
    WorkerVault,
)
from gtc_secrets.watch import VaultWatcher

log = logging.getLogger("gtc_secrets")

EXIT_OK = 0
EXIT_RESOLVE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNAVAILABLE = 4
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
PROG = "gtc-secrets"

Execvpe = Callable[[str, list[str], dict[str, str]], object]
BackendFactory = Callable[[RuntimeSettings], SecretsBackend]
AdminFactory = Callable[[AdminSettings], AdminVault]


class CommandError(Exception):
    """A failure the CLI reports on stderr with an exit code."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# Pure parts of `exec`.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecPlan:
    """Which environment variables hold references, and the references' errors (if any)."""

    references: Mapping[str, SecretRef]
    errors: Sequence[str]

    def summary(self) -> str:
        """``2 resolved secret env var(s): A, B``: names for the log, never values."""
        names = ", ".join(sorted(self.references)) or "-"
        return f"{len(self.references)} resolved secret env var(s): {names}"


def plan_exec(environ: Mapping[str, str], scope: Scope) -> ExecPlan:
    """Find every env var whose value is a reference; near misses are errors (fail closed)."""
    references: dict[str, SecretRef] = {}
    errors: list[str] = []
    for name in sorted(environ):
        value = environ[name]
        if not is_reference(value):
            continue
        if not value.startswith(c.REFERENCE_SCHEME):
            # Not shown: a value that merely starts with "secret:" might be a secret itself.
            errors.append(
                f"{name}: looks like a secret reference but does not start with {c.REFERENCE_SCHEME!r} "
                "(value not shown); refusing to start"
            )
            continue
        try:
            references[name] = parse_reference(value, scope)
        except InvalidReference as exc:
            errors.append(f"{name}: {exc}")
    return ExecPlan(references=references, errors=errors)


def child_environment(
    environ: Mapping[str, str], references: Mapping[str, SecretRef], values: Mapping[SecretRef, SecretValue]
) -> dict[str, str]:
    """The child's environment: ``environ`` with each reference replaced by its value, nothing else."""
    env = dict(environ)
    for name, ref in references.items():
        try:
            env[name] = values[ref].reveal_text(f"{name}={ref.uri}")
        except ValueError as exc:
            raise CommandError(EXIT_RESOLVE, str(exc)) from None
    return env


# ---------------------------------------------------------------------------------------------
# Commands.
# ---------------------------------------------------------------------------------------------


def _settings(environ: Mapping[str, str]) -> RuntimeSettings:
    try:
        return RuntimeSettings.from_environ(environ)
    except SettingsError as exc:
        raise CommandError(EXIT_CONFIG, str(exc)) from None


def _resolve(backend: SecretsBackend, refs: Sequence[SecretRef]) -> dict[SecretRef, SecretValue]:
    with _resolve_errors():
        return asyncio.run(backend.resolve(refs))


@contextlib.contextmanager
def _resolve_errors() -> Iterator[None]:
    """Resolution errors as the CLI's exit codes."""
    try:
        yield
    except BootTimeout as exc:
        raise CommandError(EXIT_UNAVAILABLE, str(exc)) from None
    except (TokenFileError, TLSConfigError, VaultTLSError) as exc:
        raise CommandError(EXIT_CONFIG, str(exc)) from None
    except VaultUnavailable as exc:  # pragma: no cover - retry_until turns these into BootTimeout
        raise CommandError(EXIT_UNAVAILABLE, str(exc)) from None
    except (ResolveError, EnvelopeError, VaultError) as exc:
        raise CommandError(EXIT_RESOLVE, str(exc)) from None


def cmd_exec(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    backend_factory: BackendFactory,
    execvpe: Execvpe,
) -> int:
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CommandError(EXIT_USAGE, "exec: missing command (usage: gtc-secrets exec -- CMD ARGS...)")
    watch = watch_settings(args, environ)
    settings = _settings(environ)
    plan = plan_exec(environ, settings.scope)
    if plan.errors:
        raise CommandError(
            EXIT_RESOLVE, "invalid secret references:\n" + "\n".join(f"  - {e}" for e in plan.errors)
        )
    if watch is not None:
        backend = backend_factory(settings)
        with _command_errors(command):
            return asyncio.run(exec_watched(command, environ, plan, backend, settings=settings, watch=watch))
    values = _resolve(backend_factory(settings), list(plan.references.values())) if plan.references else {}
    env = child_environment(environ, plan.references, values)
    log.info("exec %s with %s", command[0], plan.summary())
    _flush()
    with _command_errors(command):
        execvpe(command[0], command, env)
    return EXIT_OK  # only reached with a fake execvpe (tests)


@contextlib.contextmanager
def _command_errors(command: Sequence[str]) -> Iterator[None]:
    """A command that cannot be started as the shell's exit codes (127 not found, 126 not executable)."""
    try:
        yield
    except FileNotFoundError:
        raise CommandError(EXIT_NOT_FOUND, f"exec: {command[0]}: command not found") from None
    except PermissionError:
        raise CommandError(EXIT_CANNOT_EXECUTE, f"exec: {command[0]}: permission denied") from None
    except OSError as exc:
        raise CommandError(
            EXIT_CANNOT_EXECUTE, f"exec: {command[0]}: cannot execute ({exc.strerror})"
        ) from None


# ---------------------------------------------------------------------------------------------
# `exec --watch`: stay as the command's parent and restart it when a secret has a new version.
# ---------------------------------------------------------------------------------------------


def watch_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> WatchSettings | None:
    """--watch (or GREENTIC_SECRETS_WATCH; the flag wins), --on-change, --grace; None without a watch."""
    interval: float | None = None
    try:
        if args.watch is not None:
            interval = parse_watch_interval(args.watch, "--watch")
        grace = c.DEFAULT_GRACE_SECONDS if args.grace is None else parse_duration(args.grace, "--grace")
    except SettingsError as exc:
        raise CommandError(EXIT_USAGE, str(exc)) from None
    from_env = environ.get(c.ENV_SECRETS_WATCH)
    if interval is None and from_env:
        try:
            interval = parse_watch_interval(from_env, c.ENV_SECRETS_WATCH)
        except SettingsError as exc:
            raise CommandError(EXIT_CONFIG, str(exc)) from None
    if interval is None:
        if args.on_change is not None or args.grace is not None:
            raise CommandError(
                EXIT_USAGE, f"exec: --on-change and --grace need --watch INTERVAL (or {c.ENV_SECRETS_WATCH})"
            )
        return None
    on_change: OnChange = args.on_change or c.ON_CHANGE_RESTART
    return WatchSettings(interval=interval, on_change=on_change, grace_seconds=grace)


async def _unwatched() -> AsyncGenerator[Mapping[str, str], None]:
    """No secret to watch: changes that end at once (the supervisor then only supervises)."""
    return
    yield {}  # makes this an async generator


async def exec_watched(
    command: Sequence[str],
    environ: Mapping[str, str],
    plan: ExecPlan,
    backend: SecretsBackend,
    *,
    settings: RuntimeSettings,
    watch: WatchSettings,
) -> int:
    """Resolve (keeping the versions), start the command as a child, restart it on a new version."""
    refs = list(plan.references.values())
    vault: WorkerVault | None = None
    try:
        if isinstance(backend, VaultBackend) and refs:
            with _resolve_errors():  # the client loads VAULT_CACERT: a bad one is exit 3, as without a watch
                vault = backend.client()
                watcher = VaultWatcher(vault, refs, interval=watch.interval)
                values = await watcher.boot(timeout=settings.boot_timeout)

            def build(new: Mapping[SecretRef, SecretValue]) -> dict[str, str]:
                try:
                    return child_environment(environ, plan.references, new)
                except CommandError as exc:
                    raise ValueError(str(exc)) from None

            changes: AsyncGenerator[Mapping[str, str], None] = watcher.changes(build)
            what = f"checking for new versions every {watch.interval:g}s (jittered)"
        else:
            with _resolve_errors():
                values = await backend.resolve(refs) if refs else {}
            changes = _unwatched()
            what = "no secret to watch" if not refs else f"nothing to watch with the {backend.name} backend"
        env = child_environment(environ, plan.references, values)
        log.info(
            "supervising %s with %s; %s (on a change: %s, grace %gs)",
            command[0],
            plan.summary(),
            what,
            watch.on_change,
            watch.grace_seconds,
        )
        _flush()
        # `changes` is not closed here: the supervisor cancels its pending read when the child exits, and
        # the event loop finalises the generator after that cancellation has run (asyncio.run does both).
        return await supervise(
            command, env, changes, on_change=watch.on_change, grace_seconds=watch.grace_seconds
        )
    finally:
        if vault is not None:
            await vault.close()


def cmd_get(args: argparse.Namespace, environ: Mapping[str, str], backend_factory: BackendFactory) -> int:
    settings = _settings(environ)
    try:
        ref = parse_reference(args.ref, settings.scope)
    except InvalidReference as exc:
        raise CommandError(EXIT_RESOLVE, str(exc)) from None
    values = _resolve(backend_factory(settings), [ref])
    sys.stdout.buffer.write(values[ref].reveal_bytes())
    sys.stdout.buffer.flush()
    return EXIT_OK


def _put_reference(args: argparse.Namespace) -> SecretRef:
    flags = {"--env": args.env, "--tenant": args.tenant, "--team": args.team}
    try:
        for flag, value in flags.items():
            if value is not None:
                check_scope_segment(value, flag)
    except ValueError as exc:
        raise CommandError(EXIT_USAGE, str(exc)) from None
    try:
        if args.ref.startswith(c.REFERENCE_SCHEME) and args.ref.count("/") > 3:
            ref = parse_long_reference(args.ref)
            for flag, value, actual in (
                ("--env", args.env, ref.env),
                ("--tenant", args.tenant, ref.tenant),
                ("--team", args.team, ref.team),
            ):
                if value is not None and value != actual:
                    raise CommandError(EXIT_USAGE, f"{flag} {value} contradicts the reference {ref.uri}")
            return ref
        missing = [flag for flag, value in flags.items() if value is None]
        if missing:
            raise CommandError(
                EXIT_USAGE, f"put: a short reference needs {', '.join(missing)} (or use the long form)"
            )
        return parse_reference(args.ref, Scope(env=args.env, tenant=args.tenant, team=args.team))
    except InvalidReference as exc:
        raise CommandError(EXIT_USAGE, str(exc)) from None


def _read_value(args: argparse.Namespace, ref: SecretRef) -> bytes:
    if args.from_file is not None:
        try:
            value = Path(args.from_file).read_bytes()
        except OSError as exc:
            raise CommandError(
                EXIT_USAGE, f"--from-file {args.from_file}: cannot read ({exc.strerror})"
            ) from None
    elif sys.stdin.isatty():
        # Interactive: no echo, and nothing in the shell history.
        value = getpass.getpass(f"value for {ref.uri}: ").encode("utf-8")
    else:
        value = sys.stdin.buffer.read()
    return value if args.keep_trailing_newline else strip_one_newline(value)


def cmd_put(args: argparse.Namespace, environ: Mapping[str, str], admin_factory: AdminFactory) -> int:
    ref = _put_reference(args)
    try:
        settings = AdminSettings.from_environ(environ)
    except SettingsError as exc:
        raise CommandError(EXIT_CONFIG, str(exc)) from None
    if settings.plain_http:
        log.warning("%s", plain_http_warning(settings.addr, OPERATOR_TRAFFIC))
    value = _read_value(args, ref)
    try:
        stored = put_secret(admin_factory(settings), settings, ref, value)
    except SeedError as exc:
        raise CommandError(EXIT_RESOLVE, str(exc)) from None
    for line in put_report(ref, stored):
        print(line, file=sys.stderr)
    return EXIT_OK


def put_report(ref: SecretRef, stored: Stored) -> list[str]:
    """What ``put`` tells the operator (pure): the reference, where and which version; no value."""
    lines = [f"stored {ref.uri} at {stored.location} (envelope only), version {stored.version}"]
    if stored.version > 1:
        # A rotation: the workers already running have the previous version in their environment.
        lines.append(
            f"workers running `{PROG} exec --watch` pick up version {stored.version} at their next check; "
            "workers without --watch keep the old value until they are restarted"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Parser and main.
# ---------------------------------------------------------------------------------------------


def build_parser(
    environ: Mapping[str, str],
    *,
    backend_factory: BackendFactory = make_backend,
    admin_factory: AdminFactory = HvacAdminVault,
    execvpe: Execvpe = os.execvpe,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Resolve, seed and bootstrap Greentic secrets in Vault."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="subcommand", required=True)

    p_exec = sub.add_parser(
        "exec",
        help="resolve every env var holding a secret:// reference, then exec CMD with the values",
        description="Resolve every environment variable whose value is a secret:// reference, then "
        "replace this process with CMD, the values in its environment only. With --watch, start CMD as a "
        "child instead, pass signals on to it, and restart it when a referenced secret has a new version.",
    )
    p_exec.add_argument(
        "--watch",
        metavar="INTERVAL",
        help="stay as CMD's parent and restart it when a secret has a new version, checking every INTERVAL "
        f"(30, 90s, 5m, 1h; at least {c.MIN_WATCH_INTERVAL_SECONDS:g}s; default: {c.ENV_SECRETS_WATCH}, "
        "else no watch: CMD replaces gtc-secrets)",
    )
    p_exec.add_argument(
        "--on-change",
        choices=(c.ON_CHANGE_RESTART, c.ON_CHANGE_EXIT),
        help=f"restart (default): restart CMD with the new values; exit: stop CMD and exit "
        f"{EXIT_SECRETS_CHANGED} so that Kubernetes restarts the container",
    )
    p_exec.add_argument(
        "--grace",
        metavar="SECONDS",
        help=f"how long CMD has to exit after SIGTERM before SIGKILL (default {c.DEFAULT_GRACE_SECONDS:g})",
    )
    p_exec.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    p_exec.set_defaults(func=lambda args: cmd_exec(args, environ, backend_factory, execvpe))

    p_get = sub.add_parser("get", help="print one secret's value (debugging)")
    p_get.add_argument("ref", metavar="REF", help="secret://<category>/<name> or the long form")
    p_get.set_defaults(func=lambda args: cmd_get(args, environ, backend_factory))

    p_put = sub.add_parser(
        "put",
        help="seal a value (stdin or --from-file, never argv) and store only its envelope in KV",
        description="Seal a value locally with a transit data key and store only the envelope in KV-v2. "
        "Admin credentials from VAULT_ADDR / VAULT_TOKEN (/ VAULT_CACERT).",
    )
    p_put.add_argument(
        "ref", metavar="REF", help="secret://<category>/<name> (with --env/--tenant/--team) or long form"
    )
    p_put.add_argument("--env")
    p_put.add_argument("--tenant")
    p_put.add_argument("--team")
    p_put.add_argument("--from-file", metavar="FILE", help="read the value from FILE instead of stdin")
    p_put.add_argument(
        "--keep-trailing-newline", action="store_true", help="store a final newline (dropped by default)"
    )
    p_put.set_defaults(func=lambda args: cmd_put(args, environ, admin_factory))

    register_bootstrap(sub, environ=environ)
    return parser


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


def configure_logging(environ: Mapping[str, str]) -> None:
    level = environ.get(c.ENV_LOG_LEVEL, "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format=f"{PROG}: %(levelname)s %(name)s: %(message)s",
    )


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    backend_factory: BackendFactory = make_backend,
    admin_factory: AdminFactory = HvacAdminVault,
    execvpe: Execvpe = os.execvpe,
) -> int:
    """Entry point of the console script; returns the exit code."""
    env = dict(os.environ) if environ is None else dict(environ)
    configure_logging(env)
    parser = build_parser(env, backend_factory=backend_factory, admin_factory=admin_factory, execvpe=execvpe)
    try:
        args, stray = parser.parse_known_args(argv)
    except SystemExit as exc:  # usage errors (2), --help / --version (0): return, do not raise
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if stray:
        # argparse would quote them back; a stray argument is most often a value typed on the command
        # line (`put REF s3cr3t`), so count them and never show them.
        print(
            f"{PROG}: error: {len(stray)} unexpected argument(s), not shown as they may hold a secret"
            " value; values are read from stdin or --from-file, never from the command line",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # An unexpected error's message could quote anything, so show only its type and origin.
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else ""
        print(f"{PROG}: internal error: {type(exc).__name__}{where}", file=sys.stderr)
        return EXIT_RESOLVE
