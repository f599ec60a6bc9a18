"""Rule ``dev-secret-object``: the old dev Secret itself, not only the pods that read it.

An unchanged deployer still applies a Secret named like ``gtc-dev-secrets`` full of tokens. In a namespace
whose environment keeps its secrets in Vault that Secret is exactly what must never land in the cluster, so
``/validate`` refuses it on CREATE and UPDATE (under the environment's enforcement). DELETE is always
allowed (removing it is the goal), and so is an update of one that is being deleted (finalizers).
``/mutate`` never patches or judges a Secret.

Only the Secret's name and namespace are read: never a key or a value of ``data`` / ``stringData``, which
therefore cannot reach a message, a warning, the audit line or a metric.
"""

from __future__ import annotations

from typing import Any, Final

from gtc_admission import constants as c
from gtc_admission.bindings import BindingSource
from gtc_admission.config import Config, Environment, NamespaceBinding
from gtc_admission.object_reader import short_warning, show
from gtc_admission.policy import Finding, Verdict, being_deleted, not_ready_finding, unknown_pack_finding
from gtc_admission.review import ReviewRequest

# Where the README tells an operator how to move the values into Vault.
README_SECTION: Final = 'README "What an unchanged deployer sees"'


def is_secret(request: ReviewRequest) -> bool:
    return request.group == "" and request.kind == "Secret"


def _name(request: ReviewRequest, obj: dict[str, Any]) -> str:
    if request.name:
        return request.name
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def dev_secret_object_finding(name: str, namespace: str, env: Environment) -> Finding:
    secret, where, env_name = show(name), show(namespace), show(env.name)
    return Finding(
        rule=c.RULE_DEV_SECRET_OBJECT,
        message=(
            f"Secret {secret} is not allowed in namespace {where}: environment {env_name} keeps its "
            "secrets in Vault, so no secret value may be stored in the cluster. Put each value into Vault "
            f"with `gtc-secrets put` ({README_SECTION}) and reference it as secret://...; do not create "
            "this Secret"
        ),
        warning=short_warning(
            c.RULE_DEV_SECRET_OBJECT,
            f"Secret {secret} not allowed: env {env_name} uses Vault (gtc-secrets put)",
        ),
    )


def judge_secret(
    request: ReviewRequest, *, mutating: bool, config: Config, bindings: BindingSource
) -> Verdict:
    """Decide one review of a v1 Secret (see the module's docstring)."""
    obj = request.object
    if mutating or obj is None or request.operation not in ("CREATE", "UPDATE") or request.sub_resource:
        return Verdict()
    if request.operation == "UPDATE" and being_deleted(obj):
        return Verdict()
    name = _name(request, obj)
    if name not in config.forbidden_secrets:
        return Verdict()
    namespace = request.namespace
    found = bindings.lookup(namespace) if namespace else None
    if found is None:
        return Verdict()  # bound to nothing: not ours to judge
    if not isinstance(found, NamespaceBinding):
        # The cluster cache has not synced: whether this namespace uses Vault is unknown (retriable).
        return Verdict((not_ready_finding(),))
    env = config.environments.get(found.env)
    enforcement = env.enforcement if env is not None else None
    if env is None or not env.pack_is_known:
        # Fail closed: until the environment is known, it may be one that uses Vault.
        refused = unknown_pack_finding(namespace, found, env, f"Secret {show(name)} is")
        return Verdict((refused,), binding=found, enforcement=enforcement)
    if not env.uses_vault:
        return Verdict(binding=found, enforcement=enforcement)  # dev-store: the Secret is how it works
    return Verdict((dev_secret_object_finding(name, namespace, env),), binding=found, enforcement=enforcement)
