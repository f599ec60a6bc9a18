"""The three sides agree on a worker's Vault settings: what the webhook injects (example config), the role
``gtc-secrets bootstrap --team`` creates, and what the worker runtime reads. Each is tested on its own
elsewhere; here one binding goes through all three."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gtc_admission import constants as webhook_constants
from gtc_admission.config import load_config, parse_config
from gtc_admission.worker_mutation import worker_settings
from gtc_secrets import bootstrap
from gtc_secrets.settings import RuntimeSettings, SettingsError

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


# --- Plain-http Vault: needs both i12-teams (webhook) and i12-client (runtime) ---------------------------


def plain_http_injected(vault: dict[str, object]) -> dict[str, str]:
    config = parse_config(
        {
            "environments": {"mesh": {"secretsPack": "greentic.secrets.vault", "vault": vault}},
            "namespaces": {"acme-mesh": {"env": "mesh", "tenant": "acme", "team": "core"}},
        }
    )
    binding = config.namespaces["acme-mesh"]
    return dict(worker_settings(config.environments["mesh"], binding, config.vault_token).added)


def test_an_insecure_http_environment_gives_a_worker_the_runtime_accepts() -> None:
    """vault.insecureHttp: true -> VAULT_ADDR http:// and the flag; the runtime takes both."""
    env = plain_http_injected({"addr": "http://vault.mesh.svc:8200", "insecureHttp": True})
    assert env[webhook_constants.ENV_VAULT_INSECURE_HTTP] == "true"
    runtime = RuntimeSettings.from_environ(env)
    assert runtime.vault is not None and runtime.vault.addr == "http://vault.mesh.svc:8200"
    assert runtime.vault.plain_http
    # Without the flag the webhook would have injected, the runtime refuses the same address.
    del env[webhook_constants.ENV_VAULT_INSECURE_HTTP]
    with pytest.raises(SettingsError, match=webhook_constants.ENV_VAULT_INSECURE_HTTP):
        RuntimeSettings.from_environ(env)


def test_the_value_pinned_in_a_tls_environment_is_one_the_runtime_accepts() -> None:
    """In a TLS environment a pod's own flag is replaced with "false": the runtime must start with it."""
    config = load_config(EXAMPLE)
    binding = config.namespaces["acme-prod"]
    settings = worker_settings(config.environments[binding.env], binding, config.vault_token)
    pinned = settings.vault_settings[webhook_constants.ENV_VAULT_INSECURE_HTTP]
    assert pinned == "false"
    runtime = RuntimeSettings.from_environ(
        {**dict(settings.added), webhook_constants.ENV_VAULT_INSECURE_HTTP: pinned}
    )
    assert runtime.vault is not None and not runtime.vault.plain_http
