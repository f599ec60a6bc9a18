"""``gtc-secrets exec --watch``: flags, the environment variable, and the watched exec with real children.

Vault is the in-memory fake of test_resolve.py behind the runtime's real VaultBackend; the children are
small Python processes that write the SHA-256 of their secret to a file (never the value). The
supervisor's own behaviour (signals, grace, orphans) is tested in test_supervisor.py; here, what the CLI
adds: which settings start a watch, the boot, the child's environment, and a change reaching the child.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
from pathlib import Path

import pytest

from gtc_secrets import cli
from gtc_secrets import constants as c
from gtc_secrets.backends import SecretsBackend, VaultBackend, make_backend
from gtc_secrets.refs import SecretRef
from gtc_secrets.settings import (
    RuntimeSettings,
    SettingsError,
    VaultWorkerSettings,
    WatchSettings,
    parse_duration,
)
from gtc_secrets.supervisor import EXIT_SECRETS_CHANGED
from gtc_secrets.vault import Transport
from tests.unit.test_cli_runtime import BASE, Exec, env_with
from tests.unit.test_resolve import FakeVault

pytestmark = pytest.mark.usefixtures("restore_root_logging")

CANARY = "canary-watch-3f9a-never-print-me"
REF = SecretRef("prod", "acme", "core", "llm", "k")
# The child: append the SHA-256 of $K to argv[1]; then exit with argv[2], or, with "wait", stay until
# it has been started twice (a restart) or is stopped.
CHILD = """
import hashlib, os, sys, time
marker = sys.argv[1]
with open(marker, "a") as out:
    out.write(hashlib.sha256(os.environ["K"].encode()).hexdigest() + "\\n")
if sys.argv[2] == "wait":
    while len(open(marker).read().splitlines()) < 2:
        time.sleep(0.02)
    sys.exit(0)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)
sys.exit(int(sys.argv[2]))
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def fake() -> FakeVault:
    vault = FakeVault()
    vault.seed(REF, f"{CANARY}-1")
    return vault


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def vault_environ(token_file: Path, **extra: str) -> dict[str, str]:
    return {
        **BASE,
        "PATH": "/usr/bin:/bin",
        "GREENTIC_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": "https://127.0.0.1:1",
        "VAULT_K8S_TOKEN_PATH": str(token_file),
        "K": "secret://llm/k",
        **extra,
    }


def over(fake: FakeVault) -> cli.BackendFactory:
    """The runtime's real backends, the Vault one talking to the fake."""

    def backend(settings: RuntimeSettings) -> SecretsBackend:
        def transport(_: VaultWorkerSettings) -> Transport:
            return fake

        return make_backend(settings, transport_factory=transport)

    return backend


# ---------------------------------------------------------------------------------------------
# Which settings start a watch.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("90s", 90.0), ("2.5m", 150.0), ("1h", 3600.0), (" 10 ", 10.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--watch") == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-5", "1e3", "m", "5 m", "10ms"])
def test_bad_durations_name_the_flag_and_the_forms(text: str) -> None:
    with pytest.raises(SettingsError, match=r"--grace=.* is not a duration \(seconds, or a number with s, m"):
        parse_duration(text, "--grace")


def namespace(
    watch: str | None = None, on_change: str | None = None, grace: str | None = None
) -> argparse.Namespace:
    return argparse.Namespace(watch=watch, on_change=on_change, grace=grace)


def test_watch_settings_from_the_flag_the_variable_and_the_defaults() -> None:
    """The flag wins over GREENTIC_SECRETS_WATCH; restart and 30 s of grace by default; neither: None."""
    env = {c.ENV_SECRETS_WATCH: "5m"}
    assert cli.watch_settings(namespace(), {}) is None
    assert cli.watch_settings(namespace(), {c.ENV_SECRETS_WATCH: ""}) is None
    assert cli.watch_settings(namespace(), env) == WatchSettings(300.0, "restart", 30.0)
    assert cli.watch_settings(namespace("45s", "exit", "5"), env) == WatchSettings(45.0, "exit", 5.0)
    assert cli.watch_settings(namespace(grace="0"), env) == WatchSettings(300.0, "restart", 0.0)


@pytest.mark.parametrize(
    ("argv", "environ", "code", "message"),
    [
        (["--watch", "9"], {}, 2, "--watch='9': the interval must be at least 10s"),
        ([], {c.ENV_SECRETS_WATCH: "5"}, 3, "GREENTIC_SECRETS_WATCH='5': the interval must be at least 10s"),
        ([], {c.ENV_SECRETS_WATCH: "often"}, 3, "GREENTIC_SECRETS_WATCH='often' is not a duration"),
        (["--watch", "10", "--grace", "soon"], {}, 2, "--grace='soon' is not a duration"),
        (["--on-change", "exit"], {}, 2, "--on-change and --grace need --watch INTERVAL"),
        (["--grace", "5"], {}, 2, "--on-change and --grace need --watch INTERVAL"),
        (["--watch", "10", "--on-change", "later"], {}, 2, "invalid choice: 'later'"),
    ],
)
def test_watch_flag_errors_start_nothing(
    argv: list[str], environ: dict[str, str], code: int, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Bad values are refused before anything resolves or starts: 2 for a flag, 3 for the variable."""
    execvpe = Exec()
    command = ["exec", *argv, "--", "gtc-never-started"]
    assert cli.main(command, {**BASE, "PATH": "/usr/bin:/bin", **environ}, execvpe=execvpe) == code
    assert message in capfd.readouterr().err
    assert execvpe.calls == []


def test_exec_without_watch_still_replaces_the_process(token_file: Path, fake: FakeVault) -> None:
    """No --watch and no GREENTIC_SECRETS_WATCH: execvpe, as before (no child, no supervisor)."""
    execvpe = Exec()
    assert (
        cli.main(["exec", "--", "w"], vault_environ(token_file), execvpe=execvpe, backend_factory=over(fake))
        == 0
    )
    assert execvpe.calls[0][2]["K"] == f"{CANARY}-1"


# ---------------------------------------------------------------------------------------------
# The watched exec, with real children.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("how", "status"), [("0", 0), ("7", 7), ("kill", 128 + 9)])
def test_the_child_gets_the_values_and_its_status_is_returned(
    how: str,
    status: int,
    *,
    tmp_path: Path,
    child: Path,
    token_file: Path,
    fake: FakeVault,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """exec --watch starts the command as a child (never execvpe) with the value in its environment,
    and exits with its status: its exit code, or 128 + N when signal N killed it."""
    caplog.set_level(logging.INFO)
    execvpe = Exec()
    marker = tmp_path / "marker"
    argv = ["exec", "--watch", "10", "--", sys.executable, str(child), str(marker), how]
    assert cli.main(argv, vault_environ(token_file), execvpe=execvpe, backend_factory=over(fake)) == status
    assert execvpe.calls == []
    assert marker.read_text().split() == [digest(f"{CANARY}-1")]
    out, err = capfd.readouterr()
    assert "supervising" in caplog.text
    assert "checking for new versions every 10s" in caplog.text
    assert CANARY not in out + err + caplog.text


def test_a_command_that_cannot_start_is_127(
    token_file: Path, fake: FakeVault, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["exec", "--watch", "1m", "--", "gtc-no-such-command"]
    assert cli.main(argv, vault_environ(token_file), backend_factory=over(fake)) == 127
    assert "exec: gtc-no-such-command: command not found" in capfd.readouterr().err


def test_a_missing_secret_at_boot_starts_nothing(
    tmp_path: Path, child: Path, token_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The boot fails as exec's does (exit 1 naming the reference), and no child is started."""
    marker = tmp_path / "marker"
    argv = ["exec", "--watch", "10", "--", sys.executable, str(child), str(marker), "0"]
    assert cli.main(argv, vault_environ(token_file), backend_factory=over(FakeVault())) == 1
    assert "secret://prod/acme/core/llm/k: no such secret" in capfd.readouterr().err
    assert not marker.exists()


def test_a_ca_bundle_that_does_not_load_is_a_configuration_error(
    tmp_path: Path, token_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The real transport loads VAULT_CACERT when the watch's client is made: exit 3 naming the file,
    as exec without --watch does, and nothing is started."""
    environ = vault_environ(token_file, VAULT_CACERT=str(tmp_path / "no-ca.pem"))
    assert cli.main(["exec", "--watch", "10", "--", "gtc-never-started"], environ) == 3
    assert f"VAULT_CACERT {tmp_path / 'no-ca.pem'}: cannot load the CA bundle" in capfd.readouterr().err


def test_the_dev_store_is_supervised_without_checks(
    tmp_path: Path, child: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The dev store has no versions: the child runs under the supervisor, and the log says nothing is
    watched."""
    caplog.set_level(logging.INFO)
    store = tmp_path / ".dev.secrets"
    store.write_text(f'{{"prod/acme/core/llm/k": "{CANARY}"}}')
    marker = tmp_path / "marker"
    argv = ["exec", "--watch", "10", "--", sys.executable, str(child), str(marker), "3"]
    assert cli.main(argv, env_with(store, K="secret://llm/k")) == 3
    assert marker.read_text().split() == [digest(CANARY)]
    assert "nothing to watch with the dev-store backend" in caplog.text
    assert CANARY not in caplog.text


async def watched(
    tmp_path: Path, child: Path, token_file: Path, fake: FakeVault, *, watch: WatchSettings, how: str
) -> tuple[asyncio.Task[int], Path]:
    """exec_watched as a task (a short interval: the library allows it), once the child has started."""
    environ = vault_environ(token_file)
    settings = RuntimeSettings.from_environ(environ)
    backend = over(fake)(settings)
    assert isinstance(backend, VaultBackend)
    plan = cli.plan_exec(environ, settings.scope)
    marker = tmp_path / "marker"
    command = [sys.executable, str(child), str(marker), how]
    task = asyncio.create_task(
        cli.exec_watched(command, environ, plan, backend, settings=settings, watch=watch)
    )
    async with asyncio.timeout(30):
        while not marker.exists():
            assert not task.done(), task.result()
            await asyncio.sleep(0.02)
    return task, marker


async def test_a_new_version_restarts_the_child_with_the_new_value(
    tmp_path: Path, child: Path, token_file: Path, fake: FakeVault, caplog: pytest.LogCaptureFixture
) -> None:
    """A put while the child runs: the next check restarts it with the new value (the child exits 0 once
    it has been started twice)."""
    caplog.set_level(logging.INFO, logger="gtc_secrets")
    task, marker = await watched(
        tmp_path, child, token_file, fake, watch=WatchSettings(0.05, "restart", 5.0), how="wait"
    )
    fake.seed(REF, f"{CANARY}-2")
    async with asyncio.timeout(30):
        assert await task == 0
    assert marker.read_text().split() == [digest(f"{CANARY}-1"), digest(f"{CANARY}-2")]
    assert "secret://prod/acme/core/llm/k (version 1 -> 2)" in caplog.text
    assert fake.closed
    assert CANARY not in caplog.text


async def test_on_change_exit_stops_the_child_and_returns_75(
    tmp_path: Path, child: Path, token_file: Path, fake: FakeVault
) -> None:
    """--on-change exit: the child is stopped (SIGTERM) and not started again; the status is 75."""
    task, marker = await watched(
        tmp_path, child, token_file, fake, watch=WatchSettings(0.05, "exit", 5.0), how="wait"
    )
    fake.seed(REF, f"{CANARY}-2")
    async with asyncio.timeout(30):
        assert await task == EXIT_SECRETS_CHANGED == 75
    assert marker.read_text().split() == [digest(f"{CANARY}-1")]
