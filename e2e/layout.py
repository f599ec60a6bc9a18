"""Where the suite finds what deploy/ ships: the names deploy/README.md declares stable, in one place.

The suite deploys helper E's real kustomizations unchanged. Everything a rendered manifest already says
(image names, the webhook's Deployment and selector, the config in its ConfigMap, the example worker's
namespace, labels, env and ports) is read from the rendered YAML, not repeated here; only what the
manifests cannot say (folders, certificate names, the audit file, the demo worker's HTTP contract) is.

The suite never writes into the checkout: deploy/ is copied into the session's temp folder (without any
certificate material a user generated there), and ``gtc-admission certs`` writes into the copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
DEPLOY: Final = ROOT / "deploy"


@dataclass(frozen=True)
class Layout:
    """Paths are relative to a deploy/ folder (the checkout's, or the session's copy)."""

    # Kustomizations (deploy/README.md, "deploy/: names and layout").
    vault_kustomization: str = "vault"
    webhook_overlay: str = "overlays/self-managed-ca"
    example_namespace: str = "examples/acme-prod"
    # Where `gtc-admission certs` must write for the two kustomizations above (their secretGenerators).
    vault_tls: str = "vault/tls"
    webhook_tls: str = "overlays/self-managed-ca/tls"
    # Where the demo Vault's CA is copied for the example namespace's ConfigMap gtc-vault-ca (the config's
    # vault.caConfigMap): workers trust Vault through it, not through their image.
    example_vault_ca: str = "examples/acme-prod/tls/ca.crt"
    # Dockerfiles (build context: the repository root).
    webhook_dockerfile: str = "docker/webhook.Dockerfile"
    worker_dockerfile: str = "docker/worker.Dockerfile"

    # The demo Vault.
    vault_namespace: str = "vault"
    vault_workload: str = "deployment/vault"
    vault_service: str = "svc/vault"
    vault_port: int = 8200
    vault_dns: tuple[str, ...] = ("vault.vault.svc", "vault.vault.svc.cluster.local", "localhost")
    vault_ips: tuple[str, ...] = ("127.0.0.1",)
    vault_audit_file: str = "/openbao/audit/audit.log"
    vault_ingress_policy: str = "vault-ingress"
    token_reviewer_service_account: str = "vault-token-reviewer"

    # The webhook's serving certificate names (its Service).
    webhook_dns: tuple[str, ...] = (
        "gtc-admission.gtc-system.svc",
        "gtc-admission.gtc-system.svc.cluster.local",
    )
    webhook_config_key: str = "config.yaml"

    # The demo worker's HTTP contract (deploy/README.md, "The demo worker").
    worker_secret_env: str = "WEBHOOK_SECRET"
    worker_hook_path: str = "/hook"
    worker_secret_header: str = "X-Webhook-Secret"

    def required_files(self) -> tuple[str, ...]:
        return (
            f"{self.vault_kustomization}/kustomization.yaml",
            f"{self.webhook_overlay}/kustomization.yaml",
            f"{self.example_namespace}/kustomization.yaml",
            self.webhook_dockerfile,
            self.worker_dockerfile,
        )

    def missing_files(self, deploy: Path = DEPLOY) -> list[str]:
        return [f"deploy/{name}" for name in self.required_files() if not (deploy / name).is_file()]


LAYOUT: Final = Layout()

# Files `gtc-admission certs` writes (and a user may have generated in the checkout): never copied.
GENERATED_TLS_FILES: Final = frozenset({"ca.crt", "tls.crt", "tls.key", "ca-bundle.b64"})


def ignore_generated(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree`` ignore function: skip generated certificate material in any ``tls`` folder, so
    the suite's copy of deploy/ never uses (or leaks) a user's keys."""
    if Path(folder).name != "tls":
        return set()
    return {name for name in names if name in GENERATED_TLS_FILES or name.endswith((".pem", ".key", ".crt"))}
