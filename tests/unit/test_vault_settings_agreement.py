"""The three sides agree on a worker's Vault settings: what the webhook injects (example config), the role
``gtc-secrets bootstrap --team`` creates, and what the worker runtime reads. Each is tested on its own
elsewhere; here one binding goes through all three."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtc_admission.config import load_config
from gtc_admission.policy import worker_settings
from gtc_secrets import bootstrap
from gtc_secrets.settings import RuntimeSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "webhook" / "config.yaml"


def injected(namespace: str) -> dict[str, str]:
    """The variables the webhook adds to a worker container of ``namespace`` (example config)."""
    config = load_config(EXAMPLE)
    binding = config.namespaces[namespace]
    settings = worker_settings(config.environments[binding.env], binding, config.vault_token)
    return dict(settings.added)


def test_the_example_role_is_the_one_bootstrap_team_creates_and_the_runtime_logs_in_with() -> None:
    """acme-prod (team core): VAULT_K8S_ROLE = the role of --team core=acme-prod, bound to acme-prod."""
    env = injected("acme-prod")
    parser = argparse.ArgumentParser()
    bootstrap.register(parser.add_subparsers())
    args = parser.parse_args(["bootstrap", "--env", "prod", "--tenant", "acme", "--team", "core=acme-prod"])
    (grant,) = bootstrap.target_from_args(args, {}).grants

    runtime = RuntimeSettings.from_environ(env)

    assert env["VAULT_K8S_ROLE"] == grant.name == "gtc-prod-acme-core"
    assert grant.namespaces == ("acme-prod",)
    assert runtime.vault is not None and runtime.vault.role == grant.name
    assert (runtime.scope.team, runtime.scope.shared_team) == ("core", "default")
    assert grant.teams == (runtime.scope.team, runtime.scope.shared_team)
