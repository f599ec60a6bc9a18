"""Issue 11, part 1: rule dev-secret-object, the forbidden Secret itself, refused in Vault namespaces.

Through the pure decision core (a table over namespaces, operations and endpoints), then through the aiohttp
server with a canary in ``data`` and ``stringData``: no key and no value of the Secret reaches the answer,
a warning, the audit line, a log record or /metrics.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from gtc_admission import constants as c
from gtc_admission.admission import Endpoint, Outcome, handle_review
from gtc_admission.bindings import NOT_READY, Lookup
from gtc_admission.config import load_config
from gtc_admission.offline import review_text
from gtc_admission.server import ServerSettings, make_app
from tests.unit.conftest import BINDINGS, CANARY, CONFIG, DEV_SECRET, review

CANARY_KEY = "CANARY-KEY-7d1e-never-log-me"


def secret(name: str = DEV_SECRET, **metadata: Any) -> dict[str, Any]:
    """A Secret as an unchanged deployer applies it: a canary key, and the canary as value in both fields."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, **metadata},
        "type": "Opaque",
        "data": {CANARY_KEY: base64.b64encode(CANARY.encode()).decode(), "TELEGRAM_TOKEN": "dG9rZW4="},
        "stringData": {"SLACK_TOKEN": CANARY, CANARY_KEY: "x"},
    }


def run(
    obj: dict[str, Any] | None,
    endpoint: Endpoint = "validate",
    *,
    namespace: str = "acme-prod",
    operation: str = "CREATE",
    bindings: Any = BINDINGS,
) -> Outcome:
    body = review(obj, namespace=namespace, operation=operation, kind="Secret", group="")
    if obj is not None:
        body["request"]["name"] = obj["metadata"].get("name", "")
    outcome = handle_review(body, endpoint=endpoint, config=CONFIG, bindings=bindings)
    leaked = json.dumps(outcome.review) + json.dumps(outcome.audit)
    assert CANARY not in leaked
    assert CANARY_KEY not in leaked
    return outcome


def test_the_dev_secret_is_refused_in_a_vault_namespace() -> None:
    """403 with the rule id; the message names Secret and namespace, says why and what to do instead."""
    outcome = run(secret())
    response = outcome.review["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert outcome.rules == (c.RULE_DEV_SECRET_OBJECT,)
    message = response["status"]["message"]
    assert message.startswith(f"[{c.RULE_DEV_SECRET_OBJECT}] Secret {DEV_SECRET} is not allowed in namespace")
    assert "acme-prod" in message
    assert "environment prod keeps its secrets in Vault" in message
    assert "gtc-secrets put" in message
    assert "What an unchanged deployer sees" in message
    assert outcome.audit["kind"] == "Secret"
    assert outcome.audit["name"] == DEV_SECRET
    assert outcome.audit["component"] is None


def test_every_forbidden_name_is_refused_and_other_secrets_pass() -> None:
    assert run(secret("legacy-secrets")).review["response"]["allowed"] is False
    for name in ("app-secrets", "gtc-dev-secrets-2", "GTC-DEV-SECRETS"):
        outcome = run(secret(name))
        assert outcome.review["response"]["allowed"] is True
        assert outcome.rules == ()


def test_update_is_refused_too() -> None:
    assert run(secret(), operation="UPDATE").review["response"]["allowed"] is False


def test_delete_is_always_allowed() -> None:
    """Removing it is the goal (the API server sends the old object, no new one)."""
    body = review(None, namespace="acme-prod", operation="DELETE", kind="Secret", group="")
    body["request"]["name"] = DEV_SECRET
    body["request"]["oldObject"] = secret()
    outcome = handle_review(body, endpoint="validate", config=CONFIG, bindings=BINDINGS)
    assert outcome.review["response"]["allowed"] is True
    assert outcome.rules == ()


def test_an_update_of_one_being_deleted_is_allowed() -> None:
    """Finalizers must be able to let it go."""
    outcome = run(secret(deletionTimestamp="2026-12-07T07:00:00Z"), operation="UPDATE")
    assert outcome.review["response"]["allowed"] is True


def test_mutate_never_patches_or_refuses_a_secret() -> None:
    outcome = run(secret(), "mutate")
    assert outcome.review["response"]["allowed"] is True
    assert "patch" not in outcome.review["response"]
    assert outcome.rules == ()


@pytest.mark.parametrize(
    ("namespace", "allowed", "warned", "rules"),
    [
        ("acme-stage", True, True, (c.RULE_DEV_SECRET_OBJECT,)),  # enforcement warn
        ("acme-canary", True, False, (c.RULE_DEV_SECRET_OBJECT,)),  # enforcement dryrun: audit line only
        ("acme-secure", False, False, (c.RULE_DEV_SECRET_OBJECT,)),  # enforcement deny by default
        ("acme-dev", True, False, ()),  # dev-store: the Secret is how it works there
        ("unbound", True, False, ()),
        ("acme-odd", False, False, (c.RULE_UNKNOWN_SECRETS_PACK,)),  # unknown pack: fail closed
        ("acme-ghost", False, False, (c.RULE_UNKNOWN_SECRETS_PACK,)),  # environment not configured
    ],
)
def test_enforcement_and_namespaces(
    namespace: str, allowed: bool, warned: bool, rules: tuple[str, ...]
) -> None:
    outcome = run(secret(), namespace=namespace)
    response = outcome.review["response"]
    assert response["allowed"] is allowed
    assert outcome.rules == rules
    warnings = response.get("warnings") or []
    assert bool(warnings) is warned
    for warning in warnings:
        assert warning.startswith(c.RULE_DEV_SECRET_OBJECT) and warning.isascii() and len(warning) <= 120
    if namespace == "acme-odd":
        assert f"Secret {DEV_SECRET} is refused there" in response["status"]["message"]


class NotReadyBindings:
    ready = False

    def lookup(self, namespace: str) -> Lookup:
        return NOT_READY


def test_not_synced_bindings_refuse_the_forbidden_name_as_retriable() -> None:
    """Whether the namespace uses Vault is unknown yet: 503 (the API server retries), others pass."""
    outcome = run(secret(), bindings=NotReadyBindings())
    assert outcome.review["response"]["status"]["code"] == 503
    assert outcome.rules == (c.RULE_BINDINGS_NOT_READY,)
    assert run(secret("app-secrets"), bindings=NotReadyBindings()).review["response"]["allowed"] is True


def test_a_secret_without_name_in_the_request_is_judged_by_its_metadata() -> None:
    body = review(secret(), namespace="acme-prod", kind="Secret", group="")
    outcome = handle_review(body, endpoint="validate", config=CONFIG, bindings=BINDINGS)
    assert outcome.rules == (c.RULE_DEV_SECRET_OBJECT,)


# --- Through the server: answer, audit line, logs and /metrics carry no key and no value. ----------------

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.mark.parametrize("namespace", ["acme-prod", "acme-stage", "acme-canary"])
async def test_no_key_or_value_reaches_the_answer_audit_logs_or_metrics(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture, namespace: str
) -> None:
    audit, registry = io.StringIO(), CollectorRegistry()
    app = make_app(ServerSettings(), CONFIG, BINDINGS, audit_stream=audit, registry=registry)
    client = await aiohttp_client(app)
    body = review(secret(), namespace=namespace, kind="Secret", group="")
    body["request"]["name"] = DEV_SECRET
    with caplog.at_level(logging.DEBUG):
        answers = [await (await client.post(path, json=body)).text() for path in ("/mutate", "/validate")]
        metrics = await (await client.get("/metrics")).text()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    everything = "\n".join([*answers, audit.getvalue(), logged, metrics, generate_latest(registry).decode()])
    assert c.RULE_DEV_SECRET_OBJECT in audit.getvalue()
    assert f'rule="{c.RULE_DEV_SECRET_OBJECT}"' in metrics
    for canary in (CANARY, CANARY_KEY, base64.b64encode(CANARY.encode()).decode(), "TELEGRAM_TOKEN"):
        assert canary not in everything


# --- The README's "What an unchanged deployer sees" cannot drift from the code. ---------------------------

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_FOR_KIND = {
    "Secret": "secrets.validate.gtc-admission.greentic.ai",
    "Deployment": "validate.gtc-admission.greentic.ai",
}


def test_readme_shows_what_the_webhooks_answer_for_the_old_deployers_objects() -> None:
    """Each `denied the request:` line of the README section is the example config's real denial of the
    object of examples/unchanged-deployer.yaml it stands for, from the webhook the manifests route it to."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## What an unchanged deployer sees\n")
    section = text[start : text.index("\n## ", start + 1)]
    lines = re.findall(
        r'^Error from server \(Forbidden\): error when creating "examples/unchanged-deployer.yaml": '
        r'admission webhook "([^"]+)" denied the request: (.*)$',
        section,
        re.MULTILINE,
    )
    config = load_config(ROOT / "deploy" / "webhook" / "config.yaml")
    expected = []
    example = (ROOT / "examples" / "unchanged-deployer.yaml").read_text(encoding="utf-8")
    for obj in yaml.safe_load_all(example):
        result = review_text(json.dumps(obj), config=config, namespace=None)
        assert result.allowed is False
        expected.append((WEBHOOK_FOR_KIND[obj["kind"]], result.review["response"]["status"]["message"]))
        for value in obj.get("stringData", {}).values():
            assert value not in json.dumps(result.review)
    assert lines == expected
