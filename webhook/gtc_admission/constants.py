"""Every label, annotation, env var name, pack name and rule id the webhook uses, in one place."""

from typing import Final

# --- Namespace labels that bind a namespace to an environment/tenant/team (read from the cluster). ---
LABEL_ENV: Final = "greentic.ai/env"
LABEL_TENANT: Final = "greentic.ai/tenant"
LABEL_TEAM: Final = "greentic.ai/team"
DEFAULT_TEAM: Final = "default"

# --- Pod annotation: idempotency marker, set on every pod the webhook put on Vault. ---
ANNOTATION_SECRETS_BACKEND: Final = "greentic.ai/secrets-backend"
BACKEND_VAULT: Final = "vault"

# --- Secrets packs an environment can be bound to. ---
PACK_VAULT: Final = "greentic.secrets.vault"
PACK_DEV_STORE: Final = "greentic.secrets.dev-store"
KNOWN_PACKS: Final = frozenset({PACK_VAULT, PACK_DEV_STORE})

# --- Env vars injected into worker containers. ---
ENV_SECRETS_BACKEND: Final = "GREENTIC_SECRETS_BACKEND"
ENV_VAULT_ADDR: Final = "VAULT_ADDR"
ENV_VAULT_ROLE: Final = "VAULT_K8S_ROLE"
ENV_VAULT_TOKEN_PATH: Final = "VAULT_K8S_TOKEN_PATH"  # noqa: S105 (a name, not a credential)
ENV_VAULT_KV_MOUNT: Final = "VAULT_KV_MOUNT"
ENV_VAULT_KV_PREFIX: Final = "VAULT_KV_PREFIX"
ENV_VAULT_CACERT: Final = "VAULT_CACERT"  # only when the environment has vault.caConfigMap
ENV_VAULT_INSECURE_HTTP: Final = "GREENTIC_VAULT_INSECURE_HTTP"  # only with vault.insecureHttp: true
ENV_GREENTIC_ENV: Final = "GREENTIC_ENV"
ENV_GREENTIC_TENANT: Final = "GREENTIC_TENANT"
ENV_GREENTIC_TEAM: Final = "GREENTIC_TEAM"
# Identity variables: a mismatch with the namespace binding is a denial (tenant-mismatch).
IDENTITY_ENV_VARS: Final = (ENV_GREENTIC_ENV, ENV_GREENTIC_TENANT, ENV_GREENTIC_TEAM)

DEFAULT_KV_MOUNT: Final = "secret"
DEFAULT_KV_PREFIX: Final = "greentic"

# --- Names of what the webhook adds to a pod. ---
VAULT_TOKEN_VOLUME: Final = "gtc-vault-token"  # noqa: S105 (a name, not a credential)
# The file the CA ConfigMap's key is projected to, in the token folder (VAULT_CACERT points at it).
VAULT_CA_FILE: Final = "vault-ca.crt"
DEFAULT_CA_CONFIG_MAP_KEY: Final = "ca.crt"

# --- ServiceAccount names. ---
DEFAULT_SERVICE_ACCOUNT: Final = "default"

# --- The Kubernetes API token the ServiceAccount admission plugin mounts (it runs before webhooks, while a
# worker is still on "default"); the worker mutation removes it: a worker holds only its Vault token. ---
API_ACCESS_VOLUME_PREFIX: Final = "kube-api-access-"
API_ACCESS_ROOT_CA_CONFIG_MAP: Final = "kube-root-ca.crt"
API_ACCESS_MOUNT_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# --- Components a pod can be classified as (by the configured label selectors). ---
COMPONENT_WORKER: Final = "worker"
COMPONENT_ROUTER: Final = "router"
COMPONENT_OTHER: Final = "other"

# --- Rule ids: stable, used in logs, metrics, messages and audit annotations. ---
RULE_VAULT_SETTINGS_OVERRIDE: Final = "vault-settings-override"
RULE_TENANT_MISMATCH: Final = "tenant-mismatch"
RULE_DEV_SECRET_REFERENCE: Final = "dev-secret-reference"  # noqa: S105 (a name, not a credential)
RULE_WORKER_SERVICE_ACCOUNT: Final = "worker-service-account"
RULE_ROUTER_BADGE: Final = "router-badge"
RULE_UNKNOWN_SECRETS_PACK: Final = "unknown-secrets-pack"
# A worker that carries the Kubernetes API token volume (the mutation removes it; /validate reports it).
RULE_WORKER_API_TOKEN: Final = "worker-api-token"  # noqa: S105 (a name, not a credential)
# Not a policy rule: the namespace cache has not synced yet, so a worker cannot be judged (retriable).
RULE_BINDINGS_NOT_READY: Final = "bindings-not-ready"
# Not a policy rule: an unexpected internal error on a valid review (fail closed).
RULE_INTERNAL_ERROR: Final = "internal-error"
# The object under review has the wrong shape where a rule must look (e.g. spec.containers is a string).
# The API server never sends such an object; curl and offline reviews can. Refused where a rule applies.
RULE_INVALID_OBJECT: Final = "invalid-object"

# --- Audit annotation keys on the AdmissionReview response (prefix-free keys; the API server adds the
# webhook configuration's name as prefix). ---
AUDIT_ANNOTATION_DECISION: Final = "decision"
AUDIT_ANNOTATION_RULES: Final = "rules"
