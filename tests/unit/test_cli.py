"""``gtc-admission`` command line: argument errors, config errors, offline review exit codes, certs."""

from __future__ import annotations

import base64
import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gtc_admission import __version__, cli
from gtc_admission import constants as c

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = ROOT / "deploy" / "webhook" / "config.yaml"
EXAMPLE_REVIEW = ROOT / "examples" / "worker-pod-review.json"
CANARY = "CANARY-9f3a-cli"


# main() configures the root logger; tests/conftest.py puts pytest's handlers back after each test.
pytestmark = pytest.mark.usefixtures("restore_root_logging")


def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    text = CONFIG_FILE.read_text().replace("addr: https://vault.vault.svc:8200", "addr: vault.vault.svc:8200")
    assert text != CONFIG_FILE.read_text()
    path.write_text(text)
    return path


WORKER_POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: worker-1
  labels: {greentic.ai/component: worker}
spec:
  containers:
    - name: worker
      image: ghcr.io/greentic-ai/worker:1.4.2
      env:
        - {name: API_TOKEN, value: %s}
"""

DEV_SECRET_POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: worker-2
  labels: {greentic.ai/component: worker}
spec:
  containers:
    - name: worker
      image: ghcr.io/greentic-ai/worker:1.4.2
      envFrom:
        - secretRef: {name: gtc-dev-secrets}
"""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve"],
        ["serve", "--config", "x.yaml", "--port", "0"],
        ["serve", "--config", "x.yaml", "--port", "http"],
        ["serve", "--config", "x.yaml", "--tls-reload-interval", "0"],
        ["certs", "--out", "d"],
        ["certs", "--out", "d", "--dns", "not a name"],
        ["certs", "--out", "d", "--dns", "ok.example", "--ip", "999.1.1.1"],
        ["review"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing or invalid arguments: exit 2 with a usage message."""
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--version and --help print and exit 0."""
    assert cli.main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert cli.main(["serve", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ("--config", "--host", "--port", "--tls-cert", "--tls-key", "--tls-reload-interval"):
        assert option in help_text


def test_python_dash_m_runs_the_cli() -> None:
    """`python -m gtc_admission` is the same command."""
    done = subprocess.run(
        [sys.executable, "-m", "gtc_admission", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert __version__ in done.stdout


# --------------------------------------------------------------------------------------------
# serve: refusals at start (the server itself runs in the integration tests)
# --------------------------------------------------------------------------------------------


def test_serve_config_error_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config stops serve at start: exit 2, the message names the key."""
    assert cli.main(["serve", "--config", str(bad_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "config error" in err
    assert "environments.prod.vault.addr" in err


def test_serve_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config file that does not exist is a config error too."""
    assert cli.main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_serve_needs_cert_and_key_together(capsys: pytest.CaptureFixture[str]) -> None:
    """--tls-cert without --tls-key (or the reverse) is refused before anything starts."""
    assert cli.main(["serve", "--config", str(CONFIG_FILE), "--tls-cert", "a.crt"]) == 2
    assert "--tls-key" in capsys.readouterr().err
    assert cli.main(["serve", "--config", str(CONFIG_FILE), "--tls-key", "a.key"]) == 2


def test_serve_unloadable_certificate_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Certificate files that cannot be loaded stop the start with exit 2 and say which files."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    argv = [
        "serve",
        "--config",
        str(CONFIG_FILE),
        "--port",
        "1",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot start" in err and "tls.crt" in err


def test_serve_broken_kubeconfig_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KUBECONFIG pointing at a file that is not a kubeconfig stops the start (no silent static-only mode)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("just: garbage\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert cli.main(["serve", "--config", str(CONFIG_FILE), "--port", "1"]) == 2
    assert "cluster credentials" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# review: exit 0 allowed, 1 denied, 2 bad input, 3 internal error
# --------------------------------------------------------------------------------------------


def test_review_allowed_admission_review(capsys: pytest.CaptureFixture[str]) -> None:
    """An AdmissionReview file of a worker pod: exit 0, the response with its patch on stdout."""
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(EXAMPLE_REVIEW)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "AdmissionReview"
    assert out["response"]["allowed"] is True
    assert out["response"]["patchType"] == "JSONPatch"
    assert out["response"]["uid"] == json.loads(EXAMPLE_REVIEW.read_text())["request"]["uid"]


def test_review_bare_pod_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare Pod YAML on stdin with --namespace; stdout is the response only, values stay out of stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(WORKER_POD_YAML % CANARY))
    assert cli.main(["review", "--config", str(CONFIG_FILE), "--namespace", "acme-prod", "-"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["response"]["allowed"] is True
    assert CANARY not in captured.err


def test_review_denied_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A worker referencing gtc-dev-secrets in a Vault namespace: exit 1, the denial names the rule."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(DEV_SECRET_POD_YAML)
    argv = ["review", "--config", str(CONFIG_FILE), "--namespace", "acme-prod", str(manifest)]
    assert cli.main(argv) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["response"]["allowed"] is False
    assert c.RULE_DEV_SECRET_REFERENCE in json.dumps(out["response"])


@pytest.mark.parametrize(
    "text",
    ["{not: [valid", "42", "- a\n- list\n"],
    ids=["not-yaml", "scalar", "list"],
)
def test_review_bad_input_exits_2(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Input that is not a review or manifest: exit 2, nothing on stdout."""
    path = tmp_path / "input.yaml"
    path.write_text(text)
    assert cli.main(["review", "--config", str(CONFIG_FILE), "--namespace", "acme-prod", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bad input" in captured.err


def test_review_missing_input_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An input file that does not exist: exit 2."""
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_review_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config stops review at start, naming the key."""
    assert cli.main(["review", "--config", str(bad_config(tmp_path)), str(EXAMPLE_REVIEW)]) == 2
    assert "environments.prod.vault.addr" in capsys.readouterr().err


def test_review_internal_error_exits_3_without_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash in the review is exit 3 (never mistaken for a denial) and its message is not logged."""

    def explode(text: str, **_: object) -> object:
        raise RuntimeError(CANARY)

    monkeypatch.setattr(cli, "review_text", explode)
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(EXAMPLE_REVIEW)]) == 3
    captured = capsys.readouterr()
    assert "RuntimeError" in captured.err
    assert CANARY not in captured.err + captured.out


# --------------------------------------------------------------------------------------------
# certs
# --------------------------------------------------------------------------------------------


def test_certs_writes_the_files_and_prints_the_ca_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """certs: ca.crt, tls.crt, tls.key (0600), ca-bundle.b64; stdout is exactly the caBundle."""
    out_dir = tmp_path / "certs"
    names = ["gtc-admission.gtc-system.svc", "gtc-admission.gtc-system.svc.cluster.local"]
    assert cli.main(["certs", "--out", str(out_dir), "--dns", *names, "--ip", "10.0.0.7"]) == 0
    captured = capsys.readouterr()
    ca_bundle = captured.out.strip()
    assert base64.b64decode(ca_bundle) == (out_dir / "ca.crt").read_bytes()
    assert (out_dir / "ca-bundle.b64").read_text().strip() == ca_bundle
    assert stat.S_IMODE((out_dir / "tls.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out_dir / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == names
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert str(out_dir / "ca.crt") in captured.err


def test_certs_repeated_dns_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dns may be given more than once."""
    assert cli.main(["certs", "--out", str(tmp_path), "--dns", "a.example", "--dns", "B.example"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]


def test_certs_unwritable_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that cannot be created is exit 2 with a message."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["certs", "--out", str(blocker / "sub"), "--dns", "a.example"]) == 2
    assert "cannot write" in capsys.readouterr().err
