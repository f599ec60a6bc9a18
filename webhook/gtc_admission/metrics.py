"""Prometheus metrics of the webhook, on a registry of its own (nothing global is created at import).

Label values are fixed words and rule ids only, never anything taken from a request: a label value
from a request would put object names (or worse, values) into the metrics and let a client create
unbounded series. A rule id that is not one of ours is counted under ``unknown``.

``gtc_admission_reviews_total`` counts (review, rule) pairs: a review that fired two rules counts once
under each, a review that fired none under ``rule="none"``. The number of reviews is the latency
histogram's ``_count``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from gtc_admission import constants as c

ENDPOINTS: Final = frozenset({"mutate", "validate"})
DECISIONS: Final = frozenset({"allowed", "denied", "warned"})
# Every rule id constant (RULE_*), so that a rule added there is counted under its own id.
KNOWN_RULES: Final = frozenset(
    value for name, value in vars(c).items() if name.startswith("RULE_") and isinstance(value, str)
)
RULE_NONE: Final = "none"
LABEL_UNKNOWN: Final = "unknown"
LABEL_OTHER: Final = "other"

# Admission webhooks answer in milliseconds; the API server gives up after the configured timeout
# (10 s by default, 30 s at most), so the buckets stop there.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


def _endpoint(endpoint: str) -> str:
    return endpoint if endpoint in ENDPOINTS else LABEL_OTHER


def _decision(decision: str) -> str:
    return decision if decision in DECISIONS else LABEL_UNKNOWN


def _rule(rule: str) -> str:
    return rule if rule in KNOWN_RULES else LABEL_UNKNOWN


def _status(status: int) -> str:
    return str(status) if 400 <= status <= 599 else LABEL_OTHER


class Metrics:
    """The webhook's counters and histogram, registered on ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._reviews = Counter(
            "gtc_admission_reviews",
            "Admission reviews answered, by endpoint, decision and rule id (rule 'none' if no rule fired).",
            ["endpoint", "decision", "rule"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "gtc_admission_review_duration_seconds",
            "Time to decide an admission review, by endpoint and decision.",
            ["endpoint", "decision"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._bad_requests = Counter(
            "gtc_admission_bad_requests",
            "Requests refused with an HTTP 4xx before any decision, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )

    def observe_review(
        self, *, endpoint: str, decision: str, rules: Iterable[str], seconds: float, dry_run: bool
    ) -> None:
        """Count a decided review. A dryRun review changes nothing: it did not admit anything."""
        if dry_run:
            return
        endpoint_label, decision_label = _endpoint(endpoint), _decision(decision)
        fired = sorted({_rule(rule) for rule in rules}) or [RULE_NONE]
        for rule in fired:
            self._reviews.labels(endpoint=endpoint_label, decision=decision_label, rule=rule).inc()
        self._latency.labels(endpoint=endpoint_label, decision=decision_label).observe(max(seconds, 0.0))

    def observe_bad_request(self, *, endpoint: str, status: int) -> None:
        self._bad_requests.labels(endpoint=_endpoint(endpoint), status=_status(status)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of everything in the registry (served as CONTENT_TYPE)."""
        return generate_latest(self.registry)
