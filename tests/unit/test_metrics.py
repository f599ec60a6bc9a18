"""Review counters, the latency histogram and bad-request counters, on private registries."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gtc_admission import constants as c
from gtc_admission.metrics import LABEL_OTHER, LABEL_UNKNOWN, MAX_CACHED_LABEL_SETS, RULE_NONE, Metrics


def reviews(m: Metrics, endpoint: str, decision: str, rule: str) -> float:
    value = m.registry.get_sample_value(
        "gtc_admission_reviews_total", {"endpoint": endpoint, "decision": decision, "rule": rule}
    )
    return value or 0.0


def latency_count(m: Metrics, endpoint: str, decision: str) -> float:
    value = m.registry.get_sample_value(
        "gtc_admission_review_duration_seconds_count", {"endpoint": endpoint, "decision": decision}
    )
    return value or 0.0


def test_each_instance_has_its_own_registry() -> None:
    """Two Metrics objects never share counters (no module-level globals)."""
    a, b = Metrics(), Metrics()
    a.observe_review(endpoint="mutate", decision="allowed", rules=(), seconds=0.01, dry_run=False)
    assert reviews(a, "mutate", "allowed", RULE_NONE) == 1
    assert reviews(b, "mutate", "allowed", RULE_NONE) == 0


def test_given_registry_is_used() -> None:
    """A registry passed in receives the metrics."""
    registry = CollectorRegistry()
    Metrics(registry).observe_bad_request(endpoint="validate", status=415)
    assert (
        registry.get_sample_value(
            "gtc_admission_bad_requests_total", {"endpoint": "validate", "status": "415"}
        )
        == 1
    )


def test_review_without_rules_counts_under_none() -> None:
    """A review that fired nothing is counted with rule='none', and observed in the histogram."""
    m = Metrics()
    m.observe_review(endpoint="validate", decision="allowed", rules=(), seconds=0.002, dry_run=False)
    assert reviews(m, "validate", "allowed", RULE_NONE) == 1
    assert latency_count(m, "validate", "allowed") == 1


def test_each_rule_counts_once_per_review() -> None:
    """Two rules: one count each; the histogram counts the review once."""
    m = Metrics()
    rules = (c.RULE_DEV_SECRET_REFERENCE, c.RULE_TENANT_MISMATCH, c.RULE_DEV_SECRET_REFERENCE)
    m.observe_review(endpoint="mutate", decision="denied", rules=rules, seconds=0.003, dry_run=False)
    assert reviews(m, "mutate", "denied", c.RULE_DEV_SECRET_REFERENCE) == 1
    assert reviews(m, "mutate", "denied", c.RULE_TENANT_MISMATCH) == 1
    assert reviews(m, "mutate", "denied", RULE_NONE) == 0
    assert latency_count(m, "mutate", "denied") == 1


def test_every_review_counts_with_the_same_labels() -> None:
    """Label children are looked up once per label set, yet every review is counted."""
    m = Metrics()
    for _ in range(3):
        m.observe_review(
            endpoint="mutate", decision="denied", rules=(c.RULE_ROUTER_BADGE,), seconds=0.0, dry_run=False
        )
        m.observe_review(endpoint="mutate", decision="allowed", rules=[], seconds=0.0, dry_run=False)
    assert reviews(m, "mutate", "denied", c.RULE_ROUTER_BADGE) == 3
    assert reviews(m, "mutate", "allowed", RULE_NONE) == 3
    assert latency_count(m, "mutate", "denied") == 3


def test_labels_not_ours_are_counted_but_not_cached() -> None:
    """Text that is not one of our words (endpoint, decision, rule) cannot grow the label-child cache."""
    m = Metrics()
    for index in range(MAX_CACHED_LABEL_SETS + 10):
        m.observe_review(
            endpoint=f"CANARY-{index}",
            decision="denied",
            rules=(f"CANARY-{index}",),
            seconds=0.0,
            dry_run=False,
        )
    assert reviews(m, LABEL_OTHER, "denied", LABEL_UNKNOWN) == MAX_CACHED_LABEL_SETS + 10
    assert b"CANARY" not in m.exposition()
    assert len(m._children) == 0


def test_dry_run_changes_no_metric() -> None:
    """dryRun reviews leave every counter and the histogram untouched."""
    m = Metrics()
    before = m.exposition()
    m.observe_review(
        endpoint="mutate", decision="denied", rules=(c.RULE_ROUTER_BADGE,), seconds=0.1, dry_run=True
    )
    assert m.exposition() == before


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        (c.RULE_WORKER_SERVICE_ACCOUNT, c.RULE_WORKER_SERVICE_ACCOUNT),
        (c.RULE_BINDINGS_NOT_READY, c.RULE_BINDINGS_NOT_READY),
        (c.RULE_INTERNAL_ERROR, c.RULE_INTERNAL_ERROR),
        ("CANARY-9f3a-not-a-rule", LABEL_UNKNOWN),
    ],
)
def test_rule_labels_are_only_known_ids(rule: str, label: str) -> None:
    """A rule id that is not ours becomes 'unknown', so no request-derived text reaches a label."""
    m = Metrics()
    m.observe_review(endpoint="validate", decision="denied", rules=(rule,), seconds=0.0, dry_run=False)
    assert reviews(m, "validate", "denied", label) == 1
    if label == LABEL_UNKNOWN:
        assert b"CANARY" not in m.exposition()


def test_every_rule_constant_is_a_label() -> None:
    """Each RULE_* constant counts under its own id (a rule added later is not folded into 'unknown')."""
    rule_ids = {v for k, v in vars(c).items() if k.startswith("RULE_")}
    assert c.RULE_DEV_SECRET_REFERENCE in rule_ids
    m = Metrics()
    m.observe_review(endpoint="mutate", decision="denied", rules=sorted(rule_ids), seconds=0.0, dry_run=False)
    for rule in rule_ids:
        assert reviews(m, "mutate", "denied", rule) == 1
    assert reviews(m, "mutate", "denied", LABEL_UNKNOWN) == 0


def test_endpoint_decision_and_status_are_fixed_words() -> None:
    """Unexpected endpoint, decision or status values are folded into fixed words."""
    m = Metrics()
    m.observe_review(endpoint="/etc/passwd", decision="maybe", rules=(), seconds=0.0, dry_run=False)
    m.observe_bad_request(endpoint="x" * 100, status=200)
    assert reviews(m, LABEL_OTHER, LABEL_UNKNOWN, RULE_NONE) == 1
    assert (
        m.registry.get_sample_value(
            "gtc_admission_bad_requests_total", {"endpoint": LABEL_OTHER, "status": LABEL_OTHER}
        )
        == 1
    )
    assert b"passwd" not in m.exposition()


def test_latency_buckets() -> None:
    """A 30 ms review lands in the 0.05 bucket and not in the 0.025 one."""
    m = Metrics()
    m.observe_review(endpoint="mutate", decision="allowed", rules=(), seconds=0.03, dry_run=False)
    bucket = "gtc_admission_review_duration_seconds_bucket"
    labels = {"endpoint": "mutate", "decision": "allowed"}
    assert m.registry.get_sample_value(bucket, {**labels, "le": "0.025"}) == 0
    assert m.registry.get_sample_value(bucket, {**labels, "le": "0.05"}) == 1


def test_exposition_is_parseable_text() -> None:
    """The exposition parses as Prometheus text and holds the three families."""
    m = Metrics()
    m.observe_review(
        endpoint="mutate",
        decision="warned",
        rules=(c.RULE_VAULT_SETTINGS_OVERRIDE,),
        seconds=0.001,
        dry_run=False,
    )
    m.observe_bad_request(endpoint="mutate", status=413)
    families = {f.name for f in text_string_to_metric_families(m.exposition().decode())}
    assert {
        "gtc_admission_reviews",
        "gtc_admission_review_duration_seconds",
        "gtc_admission_bad_requests",
    } <= families
