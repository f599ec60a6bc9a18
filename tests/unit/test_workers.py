"""``serve --workers N``: argument validation and what is checked before any worker process is spawned.

The processes themselves (two workers on one port, signals, orphans) are tested for real in
tests/integration/test_workers.py; nothing here spawns a process.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gtc_admission import cli
from gtc_admission.bindings import StaticBindings
from gtc_admission.config import Config, load_config
from gtc_admission.server import (
    ENV_PROMETHEUS_MULTIPROC_DIR,
    MAX_WORKERS,
    PID_HEADER,
    ServerSettings,
    StartupError,
    check_address_free,
    make_app,
    run_workers,
    serve,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = ROOT / "deploy" / "webhook" / "config.yaml"
ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


# main() configures the root logger; tests/conftest.py puts pytest's handlers back after each test.
pytestmark = pytest.mark.usefixtures("restore_root_logging")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG_FILE)


def serve_args(*extra: str) -> list[str]:
    return ["serve", "--config", str(CONFIG_FILE), *extra]


@contextlib.contextmanager
def listening(*, reuse_port: bool) -> Iterator[int]:
    """A socket listening on a free port of 127.0.0.1 (with SO_REUSEPORT if asked); its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# --workers on the command line
# --------------------------------------------------------------------------------------------


def test_workers_default_to_one() -> None:
    """Without --workers, serve runs one process (the behaviour before --workers existed)."""
    assert cli.build_parser().parse_args(serve_args()).workers == 1


@pytest.mark.parametrize("value", ["1", "2", "8", str(MAX_WORKERS)])
def test_workers_accepts_a_count(value: str) -> None:
    """Any whole number from 1 to MAX_WORKERS is a worker count."""
    assert cli.build_parser().parse_args(serve_args("--workers", value)).workers == int(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "workers out of range 1-64: 0"),
        ("-1", "workers out of range 1-64: -1"),
        (str(MAX_WORKERS + 1), f"workers out of range 1-64: {MAX_WORKERS + 1}"),
        ("two", "not a number of processes: 'two'"),
        ("1.5", "not a number of processes: '1.5'"),
        ("", "not a number of processes: ''"),
    ],
)
def test_workers_refuses_what_is_not_a_count(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --workers is a usage error (exit 2) that says what is wrong, before anything starts."""
    assert cli.main(serve_args("--workers", value)) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_workers_is_an_option_of_serve_only(capsys: pytest.CaptureFixture[str]) -> None:
    """review and certs have no --workers."""
    assert cli.main(["review", "--config", str(CONFIG_FILE), "--workers", "2", "-"]) == cli.EXIT_BAD_INPUT
    assert "unrecognized arguments: --workers" in capsys.readouterr().err


def test_bad_config_stops_before_any_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config error is reported once by the supervisor (exit 2), no worker is spawned to repeat it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("serviceAccount: [not, a, name]\n")
    assert cli.main(["serve", "--config", str(bad), "--workers", "2"]) == cli.EXIT_BAD_INPUT
    assert "config error" in capsys.readouterr().err


def test_port_in_use_stops_before_any_worker(capsys: pytest.CaptureFixture[str]) -> None:
    """An address in use is exit 2 with the reason, as with one process."""
    with listening(reuse_port=False) as port:
        code = cli.main(serve_args("--port", str(port), "--workers", "2"))
    assert code == cli.EXIT_BAD_INPUT
    assert (
        f"cannot start: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    )


def test_unloadable_certificate_stops_before_any_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Certificate files that do not load are exit 2 from the supervisor, not N worker failures."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    argv = serve_args("--port", str(free_port()), "--tls-cert", str(cert), "--tls-key", str(key))
    assert cli.main([*argv, "--workers", "2"]) == cli.EXIT_BAD_INPUT
    assert "cannot start: cannot load the TLS certificate" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The checks behind them
# --------------------------------------------------------------------------------------------


def test_address_check_sees_a_plain_listener() -> None:
    """A port someone listens on is in use."""
    with listening(reuse_port=False) as port, pytest.raises(StartupError, match="Address already in use"):
        check_address_free("127.0.0.1", port)


def test_address_check_sees_a_reuse_port_listener() -> None:
    """A port another SO_REUSEPORT server listens on is in use too: the workers must not join it silently."""
    with listening(reuse_port=True) as port, pytest.raises(StartupError, match="Address already in use"):
        check_address_free("127.0.0.1", port)


def test_address_check_passes_a_free_port() -> None:
    """A free port passes (and stays free: the probe is closed)."""
    port = free_port()
    check_address_free("127.0.0.1", port)
    check_address_free("127.0.0.1", port)


def test_address_check_names_an_unknown_host() -> None:
    """A host that does not resolve is a start error naming it."""
    with pytest.raises(StartupError, match=r"cannot listen on no-such-host\.invalid:8443"):
        check_address_free("no-such-host.invalid", 8443)


@pytest.mark.parametrize("workers", [0, -3, MAX_WORKERS + 1])
def test_run_workers_refuses_a_bad_count(config: Config, workers: int) -> None:
    """The API refuses what the command line refuses."""

    def never(_settings: ServerSettings, _config: Config) -> int:
        raise AssertionError("no worker may start")

    with pytest.raises(ValueError, match="workers must be 1 to 64"):
        run_workers(ServerSettings(port=free_port()), config, workers, never)


async def test_worker_without_the_multiprocess_folder_refuses_to_start(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose environment does not name its metrics folder would serve unmerged /metrics: refused."""
    monkeypatch.delenv(ENV_PROMETHEUS_MULTIPROC_DIR, raising=False)
    settings = ServerSettings(port=free_port(), metrics_dir=tmp_path, reuse_port=True)
    with pytest.raises(StartupError, match=f"{ENV_PROMETHEUS_MULTIPROC_DIR} must be {tmp_path}"):
        await serve(settings, config, install_signal_handlers=False)


async def test_every_response_names_its_process(config: Config, aiohttp_client: ClientFactory) -> None:
    """The PID header is on reviews, errors and probes alike: which worker answered is always visible."""
    client = await aiohttp_client(make_app(ServerSettings(), config, StaticBindings(config.namespaces)))
    for method, path in [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/nowhere"), ("POST", "/mutate")]:
        response = await client.request(method, path)
        assert response.headers[PID_HEADER] == str(os.getpid()), path
