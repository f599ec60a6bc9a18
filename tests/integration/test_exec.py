"""`gtc-secrets exec` as a real process (console script, real os.execvpe) against a real OpenBao.

Kubernetes auth is backed by a TokenReview endpoint that STANDS IN FOR THE KUBERNETES API SERVER (see
tests/support/token_review.py); the ServiceAccount token file is one it signed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gtc_secrets.refs import SecretRef
from gtc_secrets.seed import HvacAdminVault, put_secret
from gtc_secrets.settings import AdminSettings
from tests.integration.conftest import Bootstrapped

pytestmark = pytest.mark.integration

CANARY = "canary-exec-0a7c55-never-print-me"
GTC_SECRETS = Path(sys.executable).parent / "gtc-secrets"
# The child: dump its environment and argv to a file, nothing else.
DUMP = (
    "import json, os, sys; json.dump({'env': dict(os.environ), 'argv': sys.argv[2:]}, open(sys.argv[1], 'w'))"
)
RUN_TIMEOUT = 120


def seed(bootstrapped: Bootstrapped, ref: SecretRef, value: str) -> None:
    settings = AdminSettings.from_environ(bootstrapped.openbao.admin_environ())
    put_secret(HvacAdminVault(settings), settings, ref, value.encode())


def base_environ(tmp_path: Path) -> dict[str, str]:
    """A small, explicit environment; LC_ALL stops Python's locale coercion from adding LC_CTYPE."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}


def worker_environ(bootstrapped: Bootstrapped, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **base_environ(tmp_path),
        "GREENTIC_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": bootstrapped.openbao.addr,
        "VAULT_CACERT": bootstrapped.openbao.ca_file,
        "VAULT_K8S_ROLE": "gtc-prod-acme",
        "VAULT_K8S_TOKEN_PATH": str(bootstrapped.worker_token("acme-prod")),
        "GREENTIC_ENV": "prod",
        "GREENTIC_TENANT": "acme",
        "GREENTIC_TEAM": "core",
        **extra,
    }


def run_exec(environ: dict[str, str], dump: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GTC_SECRETS), "exec", "--", sys.executable, "-c", DUMP, str(dump), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_exec_passes_resolved_values_and_nothing_else_changes(
    bootstrapped: Bootstrapped, tmp_path: Path
) -> None:
    """The child's environment is the parent's with each reference replaced by its value; argv is intact."""
    seed(bootstrapped, SecretRef("prod", "acme", "core", "llm", "openai_key"), CANARY)
    seed(bootstrapped, SecretRef("prod", "acme", "default", "telegram", "bot_token"), "bot: 'quoted' value")
    environ = worker_environ(
        bootstrapped,
        tmp_path,
        OPENAI_API_KEY="secret://llm/openai_key",
        TELEGRAM_TOKEN="secret://prod/acme/default/telegram/bot_token",
        SECRET_SOUNDING_NAME="plain, not a reference",
        VAULT_TOKEN=bootstrapped.openbao.root_token,  # ambient, must be ignored (and passed on untouched)
        EMPTY="",
    )
    dump = tmp_path / "child.json"
    result = run_exec(environ, dump, "--port", "8080", "two words", "--")
    assert result.returncode == 0, result.stderr
    child = json.loads(dump.read_text())
    assert child["argv"] == ["--port", "8080", "two words", "--"]
    assert child["env"] == {
        **environ,
        "OPENAI_API_KEY": CANARY,
        "TELEGRAM_TOKEN": "bot: 'quoted' value",
    }
    assert "exec " in result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_exec_refuses_to_start_with_a_missing_secret(bootstrapped: Bootstrapped, tmp_path: Path) -> None:
    """One of two references missing: exit 1, the missing one named, the child never runs."""
    seed(bootstrapped, SecretRef("prod", "acme", "core", "llm", "present"), CANARY)
    environ = worker_environ(bootstrapped, tmp_path, A="secret://llm/present", B="secret://llm/not-there")
    dump = tmp_path / "child.json"
    result = run_exec(environ, dump)
    assert result.returncode == 1
    assert "secret://prod/acme/core/llm/not-there: no such secret" in result.stderr
    assert not dump.exists()
    assert CANARY not in result.stdout + result.stderr


def test_exec_refuses_a_reference_outside_the_tenant(bootstrapped: Bootstrapped, tmp_path: Path) -> None:
    """A long-form reference into another tenant: exit 1 before any Vault call."""
    since = len(bootstrapped.openbao.audit_entries())
    environ = worker_environ(bootstrapped, tmp_path, A="secret://prod/globex/core/llm/key")
    dump = tmp_path / "child.json"
    result = run_exec(environ, dump)
    assert result.returncode == 1
    assert "A: invalid secret reference 'secret://prod/globex/core/llm/key'" in result.stderr
    assert "outside the worker's tenant" in result.stderr
    assert not dump.exists()
    assert bootstrapped.openbao.audit_entries()[since:] == []


@pytest.mark.parametrize(("command", "code"), [("no-such-command-gtc", 127), ("/", 126)])
def test_exec_command_errors(bootstrapped: Bootstrapped, tmp_path: Path, command: str, code: int) -> None:
    """A command that is not found (127) or not executable (126), with the real execvpe."""
    seed(bootstrapped, SecretRef("prod", "acme", "core", "llm", "cmd"), CANARY)
    result = subprocess.run(
        [str(GTC_SECRETS), "exec", "--", command],
        env=worker_environ(bootstrapped, tmp_path, A="secret://llm/cmd"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == code
    assert command in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_vault_down_at_boot_bounded_retries_then_clean_failure(
    bootstrapped: Bootstrapped, tmp_path: Path
) -> None:
    """Vault stopped: the worker retries with backoff for GREENTIC_SECRETS_BOOT_TIMEOUT, then exits 4."""
    environ = worker_environ(
        bootstrapped, tmp_path, A="secret://llm/whatever", GREENTIC_SECRETS_BOOT_TIMEOUT="2"
    )
    dump = tmp_path / "child.json"
    bootstrapped.openbao.stop()
    try:
        started = time.monotonic()
        result = run_exec(environ, dump)
        elapsed = time.monotonic() - started
    finally:
        bootstrapped.openbao.start()
    assert result.returncode == 4, result.stderr
    assert 2.0 <= elapsed < 30.0
    assert result.stderr.count("retrying in") >= 2
    assert "Vault still unavailable after 2s" in result.stderr
    assert "POST /v1/auth/kubernetes/login" in result.stderr
    assert not dump.exists()

    # Back up: the same worker starts.
    seed(bootstrapped, SecretRef("prod", "acme", "core", "llm", "whatever"), "after-restart")
    result = run_exec(environ, dump)
    assert result.returncode == 0, result.stderr
    assert json.loads(dump.read_text())["env"]["A"] == "after-restart"


@pytest.mark.parametrize("ca", ["reviewer-ca", "missing", "system"])
def test_tls_problems_fail_fast_as_configuration_errors(
    bootstrapped: Bootstrapped, tmp_path: Path, ca: str
) -> None:
    """A CA that does not sign Vault's certificate (or no CA file) is exit 3 at once, not a 30 s boot loop."""
    extra = {"GREENTIC_SECRETS_BOOT_TIMEOUT": "30", "A": "secret://llm/whatever"}
    environ = worker_environ(bootstrapped, tmp_path, **extra)
    if ca == "reviewer-ca":
        environ["VAULT_CACERT"] = bootstrapped.reviewer.ca_file
    elif ca == "missing":
        environ["VAULT_CACERT"] = str(tmp_path / "no-ca.pem")
    else:
        del environ["VAULT_CACERT"]  # system trust store: does not know the test CA either
    dump = tmp_path / "child.json"
    started = time.monotonic()
    result = run_exec(environ, dump)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 15
    assert "VAULT_CACERT" in result.stderr
    assert "retrying" not in result.stderr
    assert not dump.exists()


# ---------------------------------------------------------------------------------------------
# Backend selection from the process environment (no Vault needed).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [None, "", "dev-store"])
def test_dev_store_selection(tmp_path: Path, backend: str | None) -> None:
    """Unset, empty or "dev-store": values come from GREENTIC_DEV_SECRETS_FILE, not from Vault."""
    store = tmp_path / "dev.json"
    store.write_text(json.dumps({"dev/acme/core/llm/key": CANARY}))
    environ = {
        **base_environ(tmp_path),
        "GREENTIC_ENV": "dev",
        "GREENTIC_TENANT": "acme",
        "GREENTIC_TEAM": "core",
        "GREENTIC_DEV_SECRETS_FILE": str(store),
        "VAULT_ADDR": "https://127.0.0.1:1",  # would fail if Vault were used
        "K": "secret://llm/key",
    }
    if backend is not None:
        environ["GREENTIC_SECRETS_BACKEND"] = backend
    dump = tmp_path / "child.json"
    result = run_exec(environ, dump)
    assert result.returncode == 0, result.stderr
    assert json.loads(dump.read_text())["env"]["K"] == CANARY
    assert "from dev secrets file" in result.stderr
    assert CANARY not in result.stderr


@pytest.mark.parametrize("backend", ["vaultt", "VAULT", "kubernetes-secrets"])
def test_unknown_backend_fails_closed(tmp_path: Path, backend: str) -> None:
    """Anything else: exit 3 naming the value, and the child never runs."""
    environ = {
        **base_environ(tmp_path),
        "GREENTIC_ENV": "dev",
        "GREENTIC_TENANT": "acme",
        "GREENTIC_SECRETS_BACKEND": backend,
        "K": "secret://llm/key",
    }
    dump = tmp_path / "child.json"
    result = run_exec(environ, dump)
    assert result.returncode == 3
    assert f"GREENTIC_SECRETS_BACKEND={backend!r} is not a known secrets backend" in result.stderr
    assert not dump.exists()
