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
from typing import Any, Final

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
# Label children kept per (endpoint, decision, rules fired): a handful occur; the cap only bounds the
# cache should a future caller pass many rule combinations.
MAX_CACHED_LABEL_SETS: Final = 256

# The counters (one per rule label) and the histogram child one review is counted in.
_Children = tuple[tuple[Any, ...], Any]


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
        self._children: dict[tuple[str, str, tuple[str, ...]], _Children] = {}
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
        key = (endpoint, decision, tuple(rules))
        children = self._children.get(key)
        if children is None:
            children = self._children_for(endpoint, decision, key[2])
        counters, latency = children
        for counter in counters:
            counter.inc()
        latency.observe(max(seconds, 0.0))

    def _children_for(self, endpoint: str, decision: str, rules: tuple[str, ...]) -> _Children:
        # labels() takes a lock and builds the label tuple on every call; a review is counted under a few
        # fixed combinations only, so their children are looked up once. The key is bounded: an endpoint
        # and a decision that are not ours are never a key (they fall back to uncached lookups), and rule
        # tuples are made of the core's rule ids, in the order the core found them.
        endpoint_label, decision_label = _endpoint(endpoint), _decision(decision)
        fired = sorted({_rule(rule) for rule in rules}) or [RULE_NONE]
        children: _Children = (
            tuple(
                self._reviews.labels(endpoint=endpoint_label, decision=decision_label, rule=rule)
                for rule in fired
            ),
            self._latency.labels(endpoint=endpoint_label, decision=decision_label),
        )
        if (
            endpoint == endpoint_label
            and decision == decision_label
            and all(rule in KNOWN_RULES for rule in rules)
            and len(self._children) < MAX_CACHED_LABEL_SETS
        ):
            self._children[(endpoint, decision, rules)] = children
        return children

    def observe_bad_request(self, *, endpoint: str, status: int) -> None:
        self._bad_requests.labels(endpoint=_endpoint(endpoint), status=_status(status)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of everything in the registry (served as CONTENT_TYPE)."""
        return generate_latest(self.registry)
