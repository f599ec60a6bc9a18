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
import yaml
from cryptography import x509

from gtc_admission import __version__, cli, stream
from gtc_admission import constants as c
from tests.support.processes import stop_process

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


# --------------------------------------------------------------------------------------------
# review of a stream: rendered manifests, a folder; -o text / json
# --------------------------------------------------------------------------------------------

DEV_SECRET_YAML = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: gtc-dev-secrets, namespace: acme-prod}}
stringData: {{TELEGRAM_TOKEN: {CANARY}}}
data: {{OPENAI_API_KEY: {base64.b64encode(CANARY.encode()).decode()}, {CANARY}: {CANARY}}}
"""
CONFIG_MAP_YAML = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: acme-prod}\n"
OLD_WORKER_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: old-worker, namespace: acme-prod}
spec:
  template:
    metadata:
      labels: {greentic.ai/component: worker}
    spec:
      containers:
        - name: worker
          image: ghcr.io/greentic-ai/worker:1.4.2
          envFrom:
            - secretRef: {name: gtc-dev-secrets}
"""
DENIED_LINE = (
    "Deployment acme-prod/old-worker: [dev-secret-reference] references forbidden Secret gtc-dev-secrets "
    "at spec.template.spec.containers[0].envFrom[0].secretRef.name"
)


def review_stdin(
    text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code = cli.main(["review", "--config", str(CONFIG_FILE), *options, "-"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_review_stream_prints_findings_and_a_summary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Many documents on stdin: one line per finding, then the summary; a denial exits 1."""
    text = "---\n".join([CONFIG_MAP_YAML, WORKER_POD_YAML % "plain", OLD_WORKER_YAML])
    code, out, _ = review_stdin(text, monkeypatch, capsys, "--namespace", "acme-prod")
    assert code == 1
    assert out.splitlines() == [
        DENIED_LINE,
        "3 objects: 2 judged (1 admitted, 0 warned, 1 denied), 1 not judged",
    ]


def test_review_stream_all_admitted_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kind: List of admitted and not-judged objects: the summary alone, exit 0."""
    items = [yaml.safe_load(CONFIG_MAP_YAML), yaml.safe_load(WORKER_POD_YAML % "plain")]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    code, out, _ = review_stdin(text, monkeypatch, capsys, "--namespace", "acme-prod")
    assert (code, out) == (0, "2 objects: 1 judged (1 admitted, 0 warned, 0 denied), 1 not judged\n")


def test_review_unchanged_deployer_example_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's examples/unchanged-deployer.yaml: the dev Secret and the worker reading it are denied."""
    path = ROOT / "examples" / "unchanged-deployer.yaml"
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "Secret acme-prod/gtc-dev-secrets: [dev-secret-object] Secret gtc-dev-secrets is not allowed"
    )
    assert lines[1:] == [DENIED_LINE, "2 objects: 2 judged (0 admitted, 0 warned, 2 denied), 0 not judged"]
    assert "placeholder" not in lines[0]


def test_review_output_json_one_record_per_object(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o json: one JSON line per object with the audit line's fields; the summary goes to stderr."""
    code, out, err = review_stdin(
        "---\n".join([CONFIG_MAP_YAML, OLD_WORKER_YAML]), monkeypatch, capsys, "-o", "json"
    )
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["decision"], r["document"]) for r in records] == [
        ("ConfigMap", "not-judged", 1),
        ("Deployment", "denied", 2),
    ]
    assert records[1]["rules"] == [c.RULE_DEV_SECRET_REFERENCE] and records[1]["source"] == "stdin"
    assert {"time", "uid", "endpoint", "namespace", "name", "messages", "patched", "enforcement"} <= set(
        records[1]
    )
    assert "2 objects: 1 judged" in err


def test_review_output_text_for_one_object(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o text on a single object: the stream report instead of the AdmissionReview response."""
    code, out, _ = review_stdin(OLD_WORKER_YAML, monkeypatch, capsys, "-o", "text")
    assert code == 1
    assert out.splitlines()[0] == DENIED_LINE


def test_review_folder_sorted_recursive_hidden_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder: *.yaml, *.yml, *.json below it, in path order (as kubectl walks it); dot names and other
    files skipped."""
    (tmp_path / "b").mkdir()
    (tmp_path / ".github").mkdir()
    (tmp_path / "b" / "worker.YML").write_text(OLD_WORKER_YAML)
    (tmp_path / "a.json").write_text(json.dumps(yaml.safe_load(CONFIG_MAP_YAML)))
    (tmp_path / "c.yaml").write_text(OLD_WORKER_YAML.replace("old-worker", "older-worker"))
    (tmp_path / ".github" / "ci.yaml").write_text("on: push\n")
    (tmp_path / ".hidden.yaml").write_text("not: kubernetes\n")
    (tmp_path / "README.md").write_text("# not read\n")
    assert cli.main(["review", "--config", str(CONFIG_FILE), "-o", "json", str(tmp_path)]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["source"]).relative_to(tmp_path).as_posix() for r in records] == [
        "a.json",
        "b/worker.YML",
        "c.yaml",
    ]


def test_review_empty_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder without manifests is bad input (a wrong path in CI must not pass)."""
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(tmp_path)]) == 2
    assert "no *.yaml, *.yml, *.json file in this folder" in capsys.readouterr().err


def test_review_stream_bad_document_exits_2_and_reviews_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad document is named by file and number; the others are still judged; exit 2 beats exit 1."""
    path = tmp_path / "rendered.yaml"
    path.write_text("---\n".join([CONFIG_MAP_YAML, "kind: [broken\n", OLD_WORKER_YAML]))
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(path)]) == 2
    captured = capsys.readouterr()
    assert f"bad input: {path} document 2 (line 5): not YAML (" in captured.err
    assert captured.out.splitlines() == [
        DENIED_LINE,
        "2 objects: 1 judged (0 admitted, 0 warned, 1 denied), 1 not judged; 1 not reviewed (bad input)",
    ]


def test_review_stream_needs_a_namespace_for_judged_kinds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helm template output without namespaces: exit 2 naming the document, unless --namespace is given."""
    text = "---\n".join([CONFIG_MAP_YAML, WORKER_POD_YAML % "plain"])
    code, _, err = review_stdin(text, monkeypatch, capsys)
    assert code == 2
    assert (
        "bad input: stdin document 2 (line 5): a Pod without metadata.namespace: pass --namespace NS" in err
    )
    code, _, _ = review_stdin(text, monkeypatch, capsys, "--namespace", "acme-prod")
    assert code == 0


def test_review_stream_internal_error_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash on one object of a stream: exit 3 (never read as a denial), the message not logged."""

    def explode(*_: object, **__: object) -> object:
        raise RuntimeError(CANARY)

    monkeypatch.setattr(stream, "review_document", explode)
    code, out, err = review_stdin("---\n".join([OLD_WORKER_YAML, CONFIG_MAP_YAML]), monkeypatch, capsys)
    assert code == 3
    assert "internal error while reviewing stdin document 1 (line 1) (RuntimeError)" in err
    assert CANARY not in out + err


def test_review_unreadable_file_in_a_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not UTF-8 is named as unreadable; the other files are still judged."""
    (tmp_path / "a.yaml").write_bytes(b"kind: \xff\n")
    (tmp_path / "b.yaml").write_text(OLD_WORKER_YAML)
    assert cli.main(["review", "--config", str(CONFIG_FILE), str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"bad input: {tmp_path / 'a.yaml'}: cannot read: UnicodeDecodeError" in captured.err
    assert captured.out.splitlines()[0] == DENIED_LINE


def test_review_stops_when_stdout_is_closed(tmp_path: Path) -> None:
    """`review ... | head -1`: the reader left before the end, so the exit is 3, never 0 or 1."""
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join([CONFIG_MAP_YAML] * 2000))  # about 1 MB of records: more than a pipe holds
    command = [sys.executable, "-m", "gtc_admission", "review", "--config", str(CONFIG_FILE), "-o", "json"]
    with subprocess.Popen(
        [*command, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            assert json.loads(process.stdout.readline())["kind"] == "ConfigMap"
            process.stdout.close()
            assert process.wait(timeout=60) == 3
            assert "stdout was closed before the review finished" in process.stderr.read()
        finally:
            stop_process(process, timeout=10)


@pytest.mark.parametrize("output", [[], ["-o", "text"], ["-o", "json"]], ids=["default", "text", "json"])
@pytest.mark.parametrize("shape", ["stream", "single", "broken", "single-broken"])
def test_review_never_prints_a_secret_value(
    output: list[str], shape: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Canary: a Secret's data and stringData (and a tag the parser would quote) reach no output."""
    tagged = DEV_SECRET_YAML.replace("{TELEGRAM_TOKEN:", f"{{TELEGRAM_TOKEN: !{CANARY}")
    documents = {
        "stream": [CONFIG_MAP_YAML, DEV_SECRET_YAML, OLD_WORKER_YAML],
        "single": [DEV_SECRET_YAML],
        "broken": [DEV_SECRET_YAML, tagged],
        "single-broken": [tagged],
    }[shape]
    code, out, err = review_stdin("---\n".join(documents), monkeypatch, capsys, *output)
    assert code == {"stream": 1, "single": 1, "broken": 2, "single-broken": 2}[shape]
    assert CANARY not in out + err
    assert base64.b64encode(CANARY.encode()).decode() not in out + err
