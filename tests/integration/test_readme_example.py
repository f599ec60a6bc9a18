"""The README's worked example, executed as written, and docs/' reference tables checked against the code.

The commands and the expected JSON are read from README.md itself (and `make run`'s command from the
Makefile), so a README that drifts from the code fails here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gtc_admission import constants as c
from gtc_admission.admission import handle_review, internal_error_outcome
from gtc_admission.bindings import StaticBindings
from gtc_admission.config import load_config
from tests.integration.webhook_fixtures import CA_LOG_MARKER, EXAMPLE_CONFIG, ROOT, running_webhook

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
CONFIGURATION_REFERENCE = ROOT / "docs" / "configuration.md"
AUDIT_LOG_REFERENCE = ROOT / "docs" / "audit-log.md"
MAKEFILE = ROOT / "Makefile"
EXAMPLE_PORT = "8443"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def fenced(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def json_stream(text: str) -> list[Any]:
    """Every JSON value in ``text``, in order (pretty-printed documents and JSON lines alike)."""
    decoder, position = json.JSONDecoder(), 0
    values: list[Any] = []
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return values
        value, position = decoder.raw_decode(text, position)
        values.append(value)


def table_keys(text: str) -> list[str]:
    """The backticked first cell of every row of the section's table."""
    return re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE)


def make_run_serve_args() -> list[str]:
    """The arguments `make run` passes to `gtc-admission serve`, with its variables filled in."""
    makefile = MAKEFILE.read_text()
    recipe = re.search(r"^run:.*\n\t(.*)$", makefile, re.MULTILINE)
    assert recipe is not None, "no run target in the Makefile"
    variables = dict(re.findall(r"^(\w+)\s*\??:?=\s*(.*?)\s*$", makefile, re.MULTILINE))
    words = shlex.split(
        re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), recipe.group(1))
    )
    assert words[0].endswith("/gtc-admission") and words[1] == "serve", words
    args = words[2:]
    assert args[args.index("--port") + 1] == EXAMPLE_PORT, "make run must serve on the port the README uses"
    args[args.index("--port") + 1] = "{port}"
    return args


def test_worked_example_runs_as_written(tmp_path: Path) -> None:
    """`make run` + the README's curl commands give exactly the responses, patch and audit line it shows."""
    for tool in ("curl", "jq", "base64", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; the README example needs it")
    text = section("Worked example")
    shell_blocks = fenced(text, "sh")
    assert shell_blocks[0].strip() == "make run"
    commands = shell_blocks[1]
    log_block = fenced(text, "text")[0]
    assert CA_LOG_MARKER in log_block and f"listening on https://127.0.0.1:{EXAMPLE_PORT}" in log_block
    json_blocks = fenced(text, "json")
    assert len(json_blocks) == 4, "response, patch, validate response, audit line"
    expected_outputs = [value for block in json_blocks[:3] for value in json_stream(block)]
    expected_audit = json.loads(json_blocks[3])

    with running_webhook(tmp_path, serve_args=make_run_serve_args()) as server:
        assert re.search(r"^CA=\S+", commands, re.MULTILINE), "the example sets CA from the log"
        script = re.sub(r"^CA=\S+", f"CA={shlex.quote(str(server.ca_file))}", commands, flags=re.MULTILINE)
        assert f"127.0.0.1:{EXAMPLE_PORT}/" in script
        script = script.replace(f"127.0.0.1:{EXAMPLE_PORT}/", f"127.0.0.1:{server.port}/")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json_stream(done.stdout) == expected_outputs

        records = server.audit_records()
        assert len(records) == 3, "one audit line per review"
        actual_audit = dict(records[0])
        dt.datetime.fromisoformat(actual_audit.pop("time"))
        expected_audit.pop("time")
        assert actual_audit == expected_audit


def test_configuration_reference_documents_every_key() -> None:
    """Every key of deploy/webhook/config.yaml has a row in docs/configuration.md, and no row is stale."""
    document = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    keys: set[str] = set()
    for key, value in document.items():
        if key == "selectors":
            keys |= {f"selectors.{name}" for name in value}
        elif key == "environments":
            for env in value.values():
                for field, setting in env.items():
                    if field == "vault":
                        keys |= {f"environments.<env>.vault.{name}" for name in setting}
                    else:
                        keys.add(f"environments.<env>.{field}")
        elif key == "namespaces":
            keys |= {f"namespaces.<namespace>.{field}" for binding in value.values() for field in binding}
        elif isinstance(value, dict):
            keys |= {f"{key}.{name}" for name in value}
        else:
            keys.add(key)
    documented = table_keys(CONFIGURATION_REFERENCE.read_text(encoding="utf-8"))
    assert len(documented) == len(set(documented)), "a key is documented twice"
    assert set(documented) == keys


def test_audit_reference_documents_every_field() -> None:
    """The audit table lists exactly the fields of real audit records (plus time), and every rule id."""
    config = load_config(EXAMPLE_CONFIG)
    review = json.loads((ROOT / "examples" / "worker-pod-review.json").read_text())
    decided = handle_review(
        review, endpoint="mutate", config=config, bindings=StaticBindings(config.namespaces)
    )
    failed = internal_error_outcome(review, endpoint="validate", error_id="abc123")
    fields = {"time"} | set(decided.audit) | set(failed.audit)
    text = AUDIT_LOG_REFERENCE.read_text(encoding="utf-8")
    documented = table_keys(text)
    assert set(documented) == fields

    rules_row = next(line for line in text.splitlines() if line.startswith("| `rules` |"))
    listed = set(re.findall(r"`([a-z-]+)`", rules_row)) - {"rules", "warn", "dryrun"}
    rule_ids = {value for name, value in vars(c).items() if name.startswith("RULE_")}
    assert listed == rule_ids
