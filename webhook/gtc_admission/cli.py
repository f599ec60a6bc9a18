"""``gtc-admission``: serve the webhook, review a manifest offline, audit a cluster, or write certificates.

Exit codes: 0 success (``review``: everything allowed), 1 ``review``: something denied, 2 bad input, bad
configuration or a server that cannot start, 3 an unexpected internal error in ``review`` (so that a crash
is never mistaken for a plain denial by a CI pipeline). A stream exits with the worst: 3, then 2, then 1.
``audit``: 0 clean, 1 findings, 2 usage or configuration error, 3 cluster unreachable or access refused.

Logging is configured here and nowhere else; logs go to stderr. stdout carries only what the command
produces: audit lines (``serve``), the AdmissionReview response of one object or the findings and summary
of a stream (``review``), the report (``audit``), the caBundle (``certs``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from gtc_admission import __version__, cluster_report, stream
from gtc_admission import constants as c
from gtc_admission.audit import AuditWriter
from gtc_admission.bindings import StaticBindings
from gtc_admission.cluster_api import (
    DEFAULT_PAGE_SIZE,
    ClusterError,
    CredentialsError,
    KubernetesCluster,
    cluster_settings_from_env,
)
from gtc_admission.cluster_audit import NamespaceNotFound, audit_cluster
from gtc_admission.config import Config, ConfigError, load_config
from gtc_admission.namespace_cache import cluster_credentials_from_env
from gtc_admission.offline import ReviewInputError, review_text
from gtc_admission.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_WORKERS,
    ServerSettings,
    StartupError,
    run_workers,
    serve,
)
from gtc_admission.tls import DEFAULT_RELOAD_INTERVAL_SECONDS, generate_certificates, write_certificates

log = logging.getLogger("gtc_admission")

EXIT_OK: Final = 0
EXIT_DENIED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_INTERNAL_ERROR: Final = 3
EXIT_FINDINGS: Final = 1  # audit
EXIT_CLUSTER: Final = 3  # audit: the cluster is unreachable or refused a request
AUDIT_OUTPUTS: Final = ("table", "json", "policyreport")
MAX_PAGE_SIZE: Final = 10_000

STDIN: Final = "-"
OUTPUT_TEXT: Final = "text"
OUTPUT_JSON: Final = "json"
OUTPUTS: Final = (OUTPUT_TEXT, OUTPUT_JSON)
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With --workers N, several processes log to the same stderr: each line names its process.
WORKER_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
# DNS names for certificate SANs: letters, digits, hyphens, dots; an optional leading wildcard label.
_DNS_NAME: Final = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$", re.IGNORECASE
)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return seconds


def _workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {value!r}") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"workers out of range 1-{MAX_WORKERS}: {workers}")
    return workers


def _page_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of objects: {value!r}") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"page size out of range 1-{MAX_PAGE_SIZE}: {size}")
    return size


def _dns_name(value: str) -> str:
    if len(value) > 253 or not _DNS_NAME.match(value):
        raise argparse.ArgumentTypeError(f"not a DNS name: {value!r}")
    return value.lower()


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtc-admission",
        description="Admission webhook that puts Greentic worker pods on Vault and refuses secret copies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve", help="serve /mutate, /validate, /healthz, /readyz, /metrics over HTTPS"
    )
    serve_cmd.add_argument("--config", required=True, type=Path, help="YAML configuration file")
    serve_cmd.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; in a pod pass 0.0.0.0)",
    )
    serve_cmd.add_argument("--port", default=DEFAULT_PORT, type=_port, help=f"default {DEFAULT_PORT}")
    serve_cmd.add_argument("--tls-cert", type=Path, help="PEM certificate (chain); re-read when it changes")
    serve_cmd.add_argument("--tls-key", type=Path, help="PEM private key; re-read when it changes")
    serve_cmd.add_argument(
        "--tls-reload-interval",
        default=DEFAULT_RELOAD_INTERVAL_SECONDS,
        type=_positive_seconds,
        metavar="SECONDS",
        help="how often the certificate files are checked for changes "
        f"(default {DEFAULT_RELOAD_INTERVAL_SECONDS:g})",
    )
    serve_cmd.add_argument(
        "--workers",
        default=1,
        type=_workers,
        metavar="N",
        help="server processes sharing the port with SO_REUSEPORT, e.g. the pod's CPU limit "
        f"(default 1, at most {MAX_WORKERS})",
    )

    review_cmd = commands.add_parser(
        "review",
        help="offline: judge rendered manifests (one line per finding and a summary), or print the "
        "AdmissionReview response for one review or object",
    )
    review_cmd.add_argument("--config", required=True, type=Path, help="YAML configuration file")
    review_cmd.add_argument(
        "input",
        nargs="?",
        default=STDIN,
        metavar="INPUT|-",
        help="a file of YAML documents or JSON (many objects, a List, or one AdmissionReview or object), "
        "a folder read recursively for *.yaml, *.yml, *.json, or - for stdin (default)",
    )
    review_cmd.add_argument(
        "--namespace", help="namespace of objects without metadata.namespace (as kubectl apply -n)"
    )
    review_cmd.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        help="text: one line per finding, then a summary; json: one record per object (the audit "
        "line's fields). Default: the AdmissionReview response for one object, text for more",
    )

    audit_cmd = commands.add_parser(
        "audit", help="read the cluster: dev Secrets, workloads the rules refuse, workers not on Vault"
    )
    audit_cmd.add_argument("--config", required=True, type=Path, help="YAML configuration file")
    audit_cmd.add_argument("--namespace", help="audit only this namespace (default: every bound one)")
    audit_cmd.add_argument("--context", help="kubeconfig context (default: the current one, or in-cluster)")
    audit_cmd.add_argument(
        "-o", "--output", choices=AUDIT_OUTPUTS, default="table", help="default: table by namespace"
    )
    audit_cmd.add_argument(
        "--apply", action="store_true", help="create or replace the PolicyReport of every audited namespace"
    )
    audit_cmd.add_argument(
        "--page-size",
        default=DEFAULT_PAGE_SIZE,
        type=_page_size,
        metavar="N",
        help=f"objects per list request (default {DEFAULT_PAGE_SIZE})",
    )

    certs_cmd = commands.add_parser(
        "certs", help="write a CA, a serving certificate and key, and the base64 caBundle"
    )
    certs_cmd.add_argument("--out", required=True, type=Path, help="folder to write the files into")
    certs_cmd.add_argument(
        "--dns", required=True, nargs="+", action="extend", type=_dns_name, metavar="NAME", help="DNS names"
    )
    certs_cmd.add_argument(
        "--ip", default=[], nargs="+", action="extend", type=_ip_address, metavar="ADDR", help="IP addresses"
    )
    return parser


def _load_config(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return None


def _serve(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        log.error("--tls-cert and --tls-key go together: give both or neither")
        return EXIT_BAD_INPUT
    config = _load_config(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_reload_seconds=args.tls_reload_interval,
        # Decided once, here: in a pod the ServiceAccount, else KUBECONFIG, else static bindings only.
        cluster=cluster_credentials_from_env(os.environ),
    )
    if args.workers > 1:
        try:
            return run_workers(
                settings, config, args.workers, functools.partial(_worker_main, log_level=args.log_level)
            )
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_BAD_INPUT
    return _run_server(settings, config)


def _run_server(settings: ServerSettings, config: Config) -> int:
    try:
        asyncio.run(serve(settings, config))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _worker_main(settings: ServerSettings, config: Config, *, log_level: str) -> int:
    """The main of one ``serve --workers N`` process (a fresh interpreter: logging is configured here)."""
    _configure_logging(log_level, WORKER_LOG_FORMAT)
    return _run_server(settings, config)


def _read_input(source: str) -> str:
    if source == STDIN:
        return sys.stdin.read()
    return Path(source).read_text(encoding="utf-8")


def _review(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    if args.input != STDIN and os.path.isdir(args.input):
        return _review_stream(stream.read_folder(args.input), args, config)
    try:
        text = _read_input(args.input)
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read %s: %s", args.input, getattr(exc, "strerror", None) or type(exc).__name__)
        return EXIT_BAD_INPUT
    objects = stream.split_text(text, stream.STDIN_SOURCE if args.input == STDIN else args.input)
    try:
        # Two objects at most tell one object (today's answer, for the scripts that read it) from many.
        first = list(itertools.islice(objects, 2))
    except Exception as exc:
        log.error("internal error while reading %s (%s)", args.input, type(exc).__name__)
        return EXIT_INTERNAL_ERROR
    if args.output is None and stream.is_single(text, first):
        return _review_one(text, args, config)
    return _review_stream(itertools.chain(first, objects), args, config)


def _review_stream(
    objects: Iterable[stream.Manifest | stream.BadDocument], args: argparse.Namespace, config: Config
) -> int:
    """Every object judged; findings (or records) on stdout as they come, bad documents on stderr."""
    tally = stream.Tally()
    writer = AuditWriter(sys.stdout) if args.output == OUTPUT_JSON else None
    outcomes = stream.review_manifests(
        objects, config=config, bindings=StaticBindings(config.namespaces), namespace=args.namespace
    )
    try:
        try:
            for outcome in outcomes:
                tally.add(outcome)
                if isinstance(outcome, stream.BadDocument):
                    log.error("bad input: %s", outcome)
                elif isinstance(outcome, stream.Failed):
                    log.error("internal error while reviewing %s (%s)", outcome.where, outcome.error)
                elif writer is not None:
                    writer.write(outcome.record)
                else:
                    sys.stdout.writelines(f"{line}\n" for line in stream.finding_lines(outcome.record))
        except BrokenPipeError:
            raise
        except Exception as exc:
            # Type only, as in _review_one; what was reviewed before is on stdout already.
            log.error("internal error while reviewing (%s)", type(exc).__name__)
            tally.failed += 1
        if writer is None:
            sys.stdout.write(f"{tally.line()}\n")
        else:
            log.info("%s", tally.line())  # stdout holds records only
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`| head`): what was not reviewed is unknown, so never exit 0 or 1. stdout goes
        # to /dev/null, so that the interpreter's last flush at exit has nowhere to fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.error("stdout was closed before the review finished")
        return EXIT_INTERNAL_ERROR
    if tally.failed:
        return EXIT_INTERNAL_ERROR
    if tally.bad:
        return EXIT_BAD_INPUT
    return EXIT_DENIED if tally.denied else EXIT_OK


def _review_one(text: str, args: argparse.Namespace, config: Config) -> int:
    try:
        result = review_text(text, config=config, namespace=args.namespace)
    except ReviewInputError as exc:
        log.error("bad input: %s", exc)
        return EXIT_BAD_INPUT
    except Exception as exc:
        # Type only: the message could quote the input. Exit 3, so that CI never reads it as "denied".
        log.error("internal error while reviewing (%s)", type(exc).__name__)
        return EXIT_INTERNAL_ERROR
    sys.stdout.write(json.dumps(result.review, indent=2) + "\n")
    sys.stdout.flush()
    return EXIT_OK if result.allowed else EXIT_DENIED


def _audit(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    settings = cluster_settings_from_env(os.environ, context=args.context, page_size=args.page_size)
    try:
        cluster = KubernetesCluster.connect(settings)
    except CredentialsError as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    seconds = int(time.time())  # one time for every result of this run
    totals = cluster_report.Totals()
    audited: set[str] = set()
    try:
        # One namespace at a time: printed (and applied) as soon as it is audited.
        for audit in audit_cluster(cluster, config, namespace=args.namespace):
            audited.add(audit.namespace)
            totals = totals.add(audit)
            report = cluster_report.policy_report(audit, seconds=seconds)
            if args.output == "table":
                sys.stdout.write(cluster_report.table(audit))
            elif args.output == "json":
                sys.stdout.write(cluster_report.json_lines(audit))
            else:
                sys.stdout.write(cluster_report.yaml_document(report))
            sys.stdout.flush()
            if args.apply:
                done = cluster.apply_policy_report(report)
                log.info("PolicyReport %s/%s %s", audit.namespace, c.POLICY_REPORT_NAME, done)
        if args.apply and args.namespace is None:
            # A namespace no longer audited (unbound, or moved to the dev store) must not keep old results.
            for namespace, name in list(cluster.our_policy_reports()):
                if namespace not in audited:
                    cluster.delete_policy_report(namespace, name)
                    log.info(
                        "PolicyReport %s/%s deleted: the namespace is no longer audited", namespace, name
                    )
    except NamespaceNotFound as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    except ClusterError as exc:
        log.error("%s", exc)
        return EXIT_CLUSTER
    finally:
        cluster.close()
    if args.output == "table":
        sys.stdout.write(cluster_report.summary(totals))
    else:
        log.info("%s", cluster_report.summary(totals).rstrip())
    return EXIT_FINDINGS if totals.findings else EXIT_OK


def _certs(args: argparse.Namespace) -> int:
    bundle = generate_certificates(args.dns, args.ip)
    try:
        paths = write_certificates(bundle, args.out)
    except OSError as exc:
        log.error("cannot write certificates to %s: %s", args.out, exc.strerror or type(exc).__name__)
        return EXIT_BAD_INPUT
    log.info(
        "wrote %s (CA), %s and %s (serving certificate and key, 0600), %s (caBundle) for %s",
        paths.ca_cert,
        paths.cert,
        paths.key,
        paths.ca_bundle,
        ", ".join([*args.dns, *args.ip]),
    )
    # stdout: only the caBundle, so that `CA_BUNDLE=$(gtc-admission certs ...)` works.
    sys.stdout.write(bundle.ca_bundle_b64 + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _configure_logging(level: str, log_format: str = LOG_FORMAT) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed what to say
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    several_processes = args.command == "serve" and args.workers > 1
    _configure_logging(args.log_level, WORKER_LOG_FORMAT if several_processes else LOG_FORMAT)
    if args.command == "serve":
        return _serve(args)
    if args.command == "review":
        return _review(args)
    if args.command == "audit":
        return _audit(args)
    return _certs(args)
