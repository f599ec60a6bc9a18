"""The AdmissionReviews every benchmark sends: the same three pods for the HTTP load, the decision function
alone and the memory run, so that their figures can be compared.

- ``small``: the README's worker pod (one container, one env var), mutated onto Vault.
- ``twenty``: a worker pod with 20 containers of 5 env vars and 2 ports each, mutated (the patch touches
  every container: the worst ordinary case of the patch builder and the audit record).
- ``denied``: a worker pod that reads ``gtc-dev-secrets`` through ``secretKeyRef`` and ``envFrom``, refused
  with ``dev-secret-reference``.

All are CREATEs in ``acme-prod``, bound to the Vault environment ``prod`` by the example config.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
EXAMPLE_REVIEW: Final = ROOT / "examples" / "worker-pod-review.json"
EXAMPLE_CONFIG: Final = ROOT / "deploy" / "webhook" / "config.yaml"

SMALL: Final = "small"
TWENTY: Final = "twenty"
DENIED: Final = "denied"
POD_NAMES: Final = (SMALL, TWENTY, DENIED)
DESCRIPTIONS: Final = {
    SMALL: "small worker pod (1 container), patched",
    TWENTY: "20-container worker pod, patched",
    DENIED: "worker pod reading gtc-dev-secrets, denied",
}
# What /mutate must answer for each pod (checked before any load is measured).
EXPECTED_ALLOWED: Final = {SMALL: True, TWENTY: True, DENIED: False}


def _base() -> dict[str, Any]:
    review: dict[str, Any] = json.loads(EXAMPLE_REVIEW.read_text(encoding="utf-8"))
    return review


def _container(index: int) -> dict[str, Any]:
    return {
        "name": f"sidecar-{index}",
        "image": f"ghcr.io/greentic-ai/worker-part-{index}:1.4.2",
        "env": [{"name": f"SETTING_{index}_{k}", "value": f"value-{k}"} for k in range(5)],
        "ports": [{"containerPort": 8000 + index, "protocol": "TCP"}, {"containerPort": 9000 + index}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
    }


def review(name: str) -> dict[str, Any]:
    """A fresh copy of the review for ``name`` (one of POD_NAMES)."""
    body = _base()
    pod = body["request"]["object"]
    if name == SMALL:
        pass
    elif name == TWENTY:
        first = pod["spec"]["containers"][0]
        pod["spec"]["containers"] = [first, *(_container(i) for i in range(1, 20))]
    elif name == DENIED:
        container = pod["spec"]["containers"][0]
        container["env"].append(
            {
                "name": "OPENAI_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "gtc-dev-secrets", "key": "openai_key"}},
            }
        )
        container["envFrom"] = [{"secretRef": {"name": "gtc-dev-secrets"}}]
    else:
        raise ValueError(f"unknown pod {name!r}; one of {', '.join(POD_NAMES)}")
    body["request"]["uid"] = f"bench-{name}-0000"
    return copy.deepcopy(body)


def body_bytes(name: str) -> bytes:
    """The request body as the API server sends it (compact JSON)."""
    return json.dumps(review(name), separators=(",", ":")).encode()
