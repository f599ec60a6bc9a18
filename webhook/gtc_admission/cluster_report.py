"""What ``gtc-admission audit`` prints: a table by namespace, JSON lines, or PolicyReports.

Pure: ``NamespaceAudit`` in, text or documents out; the clock is read by the caller. Every text here comes
from findings, which name objects, fields and rules, never a value.

PolicyReports follow ``wgpolicyk8s.io/v1alpha2`` (the CRD Kyverno and Policy Reporter install): one report
per audited namespace, always named ``gtc-admission``, so a new run replaces the last one's results. A
namespace without findings gets a report too (all passed), so fixed findings disappear from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import yaml

from gtc_admission import constants as c
from gtc_admission.cluster_audit import AuditFinding, NamespaceAudit

# A PolicyReport is one object in etcd (at most ~1.5 MiB); a result takes about 600 bytes. Past this many
# results the report keeps the first ones and exact summary counts, and says how many it left out.
MAX_REPORT_RESULTS: Final = 1000
ANNOTATION_RESULTS_LEFT_OUT: Final = "gtc-admission/results-left-out"
# Policy Reporter groups results by category.
CATEGORY: Final = "Secrets in Vault"
_RESULTS: Final = ("fail", "warn", "error")


@dataclass(frozen=True)
class Totals:
    namespaces: int = 0
    checked: int = 0
    fail: int = 0
    warn: int = 0
    error: int = 0

    @property
    def findings(self) -> int:
        return self.fail + self.warn + self.error

    def add(self, audit: NamespaceAudit) -> Totals:
        counts = _counts(audit.findings)
        return Totals(
            self.namespaces + 1,
            self.checked + audit.checked,
            self.fail + counts["fail"],
            self.warn + counts["warn"],
            self.error + counts["error"],
        )


def _counts(findings: Iterable[AuditFinding]) -> dict[str, int]:
    counts = dict.fromkeys(_RESULTS, 0)
    for finding in findings:
        counts[finding.result] += 1
    return counts


# --- table ------------------------------------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def table(audit: NamespaceAudit) -> str:
    """One namespace: a heading, then one row per finding with its message and what to do under it."""
    b = audit.binding
    heading = (
        f"{audit.namespace} (env {b.env}, tenant {b.tenant}, team {b.team}; "
        f"enforcement {audit.enforcement or 'none'}): {_plural(audit.checked, 'object')} checked, "
        f"{_plural(len(audit.findings), 'finding') if audit.findings else 'no findings'}"
    )
    if not audit.findings:
        return heading + "\n"
    rows = [("RESULT", "SEVERITY", "RULE", "RESOURCE")]
    rows += [(f.result, f.severity, f.rule, f.resource.shown) for f in audit.findings]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = " " * (4 + widths[0])
    lines = [heading]
    for row, finding in zip(rows, (None, *audit.findings), strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[3]]))
        if finding is not None:
            lines.append(f"{indent}{finding.message}")
            if finding.action:
                lines.append(f"{indent}to do: {finding.action}")
    return "\n".join(lines) + "\n"


def summary(totals: Totals) -> str:
    return (
        f"audit: {_plural(totals.namespaces, 'namespace')}, {_plural(totals.checked, 'object')} checked, "
        f"{_plural(totals.findings, 'finding')} "
        f"({totals.fail} fail, {totals.warn} warn, {totals.error} error)\n"
    )


# --- JSON lines -------------------------------------------------------------------------------------------


def json_records(audit: NamespaceAudit) -> list[dict[str, Any]]:
    """One record per finding."""
    b = audit.binding
    return [
        {
            "namespace": audit.namespace,
            "env": b.env,
            "tenant": b.tenant,
            "team": b.team,
            "enforcement": audit.enforcement,
            "apiVersion": f.resource.api_version,
            "kind": f.resource.kind,
            "name": f.resource.name,
            "uid": f.resource.uid,
            "rule": f.rule,
            "result": f.result,
            "severity": f.severity,
            "message": f.message,
            "action": f.action,
            "owner": {"kind": f.owner.kind, "name": f.owner.name} if f.owner is not None else None,
        }
        for f in audit.findings
    ]


def json_lines(audit: NamespaceAudit) -> str:
    return "".join(orjson.dumps(record).decode() + "\n" for record in json_records(audit))


# --- PolicyReport -----------------------------------------------------------------------------------------


def _result(finding: AuditFinding, audit: NamespaceAudit, seconds: int) -> dict[str, Any]:
    ref = finding.resource
    properties = {"env": audit.binding.env, "tenant": audit.binding.tenant, "team": audit.binding.team}
    if finding.owner is not None:
        properties["owner"] = finding.owner.shown
    if finding.action:
        properties["action"] = finding.action
    resource = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name, "namespace": ref.namespace}
    if ref.uid:
        resource["uid"] = ref.uid
    return {
        "source": c.POLICY_REPORT_SOURCE,
        "policy": c.POLICY_REPORT_POLICY,
        "rule": finding.rule,
        "category": CATEGORY,
        "result": finding.result,
        "severity": finding.severity,
        "scored": True,
        "message": finding.message,
        "resources": [resource],
        "properties": properties,
        "timestamp": {"seconds": seconds, "nanos": 0},
    }


def policy_report(audit: NamespaceAudit, *, seconds: int) -> dict[str, Any]:
    """The namespace's PolicyReport; ``seconds``: the audit's time (Unix seconds) on every result."""
    counts = _counts(audit.findings)
    results = [_result(f, audit, seconds) for f in audit.findings[:MAX_REPORT_RESULTS]]
    metadata: dict[str, Any] = {
        "name": c.POLICY_REPORT_NAME,
        "namespace": audit.namespace,
        "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_AUDIT},
    }
    left_out = len(audit.findings) - len(results)
    if left_out > 0:
        metadata["annotations"] = {ANNOTATION_RESULTS_LEFT_OUT: str(left_out)}
    return {
        "apiVersion": f"{c.POLICY_REPORT_GROUP}/{c.POLICY_REPORT_VERSION}",
        "kind": c.POLICY_REPORT_KIND,
        "metadata": metadata,
        "summary": {"pass": audit.passed, "skip": 0, **counts},
        "results": results,
    }


def yaml_document(document: Mapping[str, Any]) -> str:
    """One YAML document with its ``---`` line, for ``kubectl apply -f -``."""
    return "---\n" + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
