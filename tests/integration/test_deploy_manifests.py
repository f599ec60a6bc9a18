"""The rendered manifests' command lines, run for real on 127.0.0.1 (there is no cluster here).

What `kubectl apply -k` would start is taken from the rendered YAML, not retyped: the container's command
and arguments, the ConfigMap's files and the Secret's TLS material are written where the pod would mount
them (a temp folder standing in for each mount path), only the listen addresses are moved to 127.0.0.1 and
free ports. So the demo Vault's dev mode + config file (TLS listener, file audit device) is proven to start
with the OpenBao the tests use, and the webhook to serve its probes and /mutate to a client that trusts
only the rendered caBundle and checks the Service's DNS name, as the API server does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from gtc_admission.tls import generate_certificates, write_certificates
from tests.support.openbao import find_bao, free_port_pair, parse_audit_log, redact_log
from tests.support.processes import stop_process
from tests.unit.test_manifests import (
    DEPLOY,
    KUBECTL,
    ROOT,
    SERVICE_DNS,
    VAULT_DNS_NAMES,
    WEBHOOK_NAME,
    Doc,
    container,
    kustomize,
    one,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot render the kustomizations"),
]

START_TIMEOUT_S = 30.0
_ROOT_TOKEN_RE = re.compile(r"^Root Token: (\S+)[ \t]*$", re.MULTILINE)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing from the developer's shell may change how the servers start (VAULT_*, BAO_*, KUBECONFIG).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_")) and k != "KUBECONFIG"}
    env.update(extra)
    return env


def _materialise(docs: list[Doc], deployment: str, root: Path) -> dict[str, str]:
    """Write every ConfigMap/Secret volume of the Deployment under ``root``; mount path -> local folder."""
    pod = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mapping: dict[str, str] = {}
    for mount in container(docs, deployment)["volumeMounts"]:
        local = root / mount["name"]
        local.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for key, text in one(docs, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (local / key).write_text(text, encoding="utf-8")
        elif "secret" in volume:
            for key, data in one(docs, "Secret", volume["secret"]["secretName"])["data"].items():
                (local / key).write_bytes(base64.b64decode(data))
        mapping[mount["mountPath"]] = str(local)
    return mapping


def _rewrite(text: str, replacements: Mapping[str, str]) -> str:
    # One pass (a replacement is never rewritten again), longest first (/a/b before /a).
    pattern = "|".join(re.escape(old) for old in sorted(replacements, key=len, reverse=True))
    return re.sub(pattern, lambda match: replacements[match.group(0)], text)


@contextmanager
def _process(
    command: list[str], env: dict[str, str], log_file: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            stop_process(process, timeout=15)


def _poll(check: Any, process: subprocess.Popen[bytes], log_file: Path, what: str) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{redact_log(log_file.read_text())}")
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"{what} did not come up in {START_TIMEOUT_S:.0f}s:\n{redact_log(log_file.read_text())}")


# --- the demo Vault ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vault_render(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root)
    # What deploy/vault/kustomization.yaml tells the operator to generate.
    write_certificates(generate_certificates(VAULT_DNS_NAMES, ["127.0.0.1"]), root / "vault" / "tls")
    return kustomize(root / "vault")


def _vault_health(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as answer:
            return int(answer.status) == 200
    except (OSError, ssl.SSLError):
        return False


def test_demo_vault_starts_as_rendered_with_tls_and_audit(vault_render: list[Doc], tmp_path: Path) -> None:
    """bao server -dev + the ConfigMap's config: TLS with the Secret's CA, the exec probe, an audit line."""
    docs = vault_render
    server = container(docs, "vault")
    mounts = _materialise(docs, "vault", tmp_path / "mounts")
    (tmp_path / "mounts" / "audit").chmod(0o700)
    api_port = _free_port()
    dev_port = free_port_pair()  # dev mode puts its cluster listener on the next port
    cluster_port = _free_port()
    addresses = {
        "0.0.0.0:8200": f"127.0.0.1:{api_port}",
        "127.0.0.1:8201": f"127.0.0.1:{cluster_port}",
        "127.0.0.1:8210": f"127.0.0.1:{dev_port}",
    }
    replacements = {**mounts, **addresses}
    config_dir = Path(mounts["/openbao/config"])
    for file in config_dir.iterdir():
        file.write_text(_rewrite(file.read_text(encoding="utf-8"), replacements), encoding="utf-8")
    command = [_rewrite(arg, replacements) for arg in server["command"]]
    assert command[0] == "bao"
    command[0] = find_bao()
    env = _clean_env(**{e["name"]: _rewrite(e["value"], replacements) for e in server.get("env", [])})
    env["HOME"] = str(tmp_path / "mounts" / "tmp")
    log_file = tmp_path / "vault.log"
    ca_file = Path(mounts["/openbao/tls"]) / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://127.0.0.1:{api_port}"
    with _process(command, env, log_file, tmp_path) as process:
        _poll(lambda: _vault_health(url + "/v1/sys/health", context), process, log_file, "bao server")
        # The readiness/liveness probe command, as the kubelet runs it in the container.
        for probe in ("readinessProbe", "livenessProbe"):
            probe_command = [_rewrite(arg, replacements) for arg in server[probe]["exec"]["command"]]
            probe_command[0] = find_bao()
            result = subprocess.run(probe_command, env=env, capture_output=True, timeout=20, check=False)
            assert result.returncode == 0, (probe, result.stdout, result.stderr)
        # A root-token request through the TLS listener, then its line in the audit log.
        token = _poll(
            lambda: _ROOT_TOKEN_RE.search(log_file.read_text()), process, log_file, "the root token banner"
        ).group(1)
        request = urllib.request.Request(url + "/v1/sys/mounts", headers={"X-Vault-Token": token})
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:
            assert "secret/" in json.loads(answer.read())["data"]  # dev mode's KV-v2 at secret/
        audit_file = Path(mounts["/openbao/audit"]) / "audit.log"
        entries = _poll(
            lambda: [
                e
                for e in parse_audit_log(audit_file.read_text() if audit_file.exists() else "")
                if e.get("request", {}).get("path") == "sys/mounts"
            ],
            process,
            log_file,
            "the audit line",
        )
        assert entries
    # Nothing was written outside the mounted folders: the root filesystem may be read-only.
    assert not (Path(env["HOME"]) / ".vault-token").exists()


def test_demo_vault_certificate_names_match_the_service(vault_render: list[Doc]) -> None:
    """The generated certificate (the README's command) covers the Service name the webhook injects."""
    secret = one(vault_render, "Secret", "vault-tls")
    pem = base64.b64decode(secret["data"]["tls.crt"])
    names = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "vault.vault.svc" in names.value.get_values_for_type(x509.DNSName)


# --- the webhook ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webhook_render(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root)
    # What deploy/overlays/self-managed-ca/kustomization.yaml tells the operator to generate.
    write_certificates(
        generate_certificates([SERVICE_DNS, f"{SERVICE_DNS}.cluster.local"]),
        root / "overlays" / "self-managed-ca" / "tls",
    )
    return kustomize(root / "overlays" / "self-managed-ca")


async def test_webhook_serves_probes_and_mutate_as_rendered(
    webhook_render: list[Doc], tmp_path: Path
) -> None:
    """The Deployment's args serve the probes and /mutate to a client that trusts only the caBundle."""
    docs = webhook_render
    server = container(docs, WEBHOOK_NAME)
    mounts = _materialise(docs, WEBHOOK_NAME, tmp_path / "mounts")
    port = _free_port()
    args = [_rewrite(arg, mounts) for arg in server["args"]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    command = [str(Path(sys.executable).parent / "gtc-admission"), *args]
    log_file = tmp_path / "webhook.log"

    mutating = one(docs, "MutatingWebhookConfiguration", WEBHOOK_NAME)["webhooks"][0]
    context = ssl.create_default_context(
        cadata=base64.b64decode(mutating["clientConfig"]["caBundle"]).decode("ascii")
    )
    base = f"https://127.0.0.1:{port}"
    review: dict[str, Any] = json.loads((ROOT / "examples" / "worker-pod-review.json").read_text())

    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> int:
            # server_hostname: verify the certificate for the Service's name, as the API server does.
            async with session.get(base + path, ssl=context, server_hostname=SERVICE_DNS) as resp:
                return resp.status

        with _process(command, _clean_env(), log_file, tmp_path) as process:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert process.poll() is None, log_file.read_text()
                try:
                    if await get(server["readinessProbe"]["httpGet"]["path"]) == 200:
                        break
                except aiohttp.ClientConnectorError:
                    pass
                assert time.monotonic() < deadline, log_file.read_text()
                await asyncio.sleep(0.05)
            assert await get(server["livenessProbe"]["httpGet"]["path"]) == 200
            path = mutating["clientConfig"]["service"]["path"]
            async with session.post(
                base + path, json=review, ssl=context, server_hostname=SERVICE_DNS
            ) as resp:
                assert resp.status == 200
                answer = await resp.json()
            assert answer["response"]["allowed"] is True and answer["response"]["patchType"] == "JSONPatch"
        assert process.returncode == 0, log_file.read_text()  # SIGTERM: a clean drain and exit
