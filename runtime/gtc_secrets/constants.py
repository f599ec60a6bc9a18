"""Every env var name, default, and naming rule the worker runtime uses, in one place.

The runtime is installed into worker images on its own, so it does not import the webhook's
``gtc_admission.constants``; the env var names below are the same strings the webhook injects.
"""

from typing import Final

# --- Backend selection. ---
ENV_SECRETS_BACKEND: Final = "GREENTIC_SECRETS_BACKEND"
BACKEND_VAULT: Final = "vault"
BACKEND_DEV_STORE: Final = "dev-store"
BACKENDS: Final = (BACKEND_VAULT, BACKEND_DEV_STORE)
# Unset means the old development behaviour (a local file), as the issue asks.
DEFAULT_BACKEND: Final = BACKEND_DEV_STORE

# --- Worker identity (injected by the webhook from the namespace binding). ---
ENV_GREENTIC_ENV: Final = "GREENTIC_ENV"
ENV_GREENTIC_TENANT: Final = "GREENTIC_TENANT"
ENV_GREENTIC_TEAM: Final = "GREENTIC_TEAM"
# Same default as the webhook's namespace binding (gtc_admission.constants.DEFAULT_TEAM).
DEFAULT_TEAM: Final = "default"
# The tenant's team every team may read besides its own (secrets of the environment owner, such as an
# inbound webhook's secret); the same default as `gtc-secrets bootstrap --shared-team`.
ENV_GREENTIC_SHARED_TEAM: Final = "GREENTIC_SHARED_TEAM"
DEFAULT_SHARED_TEAM: Final = DEFAULT_TEAM

# --- Vault settings of the worker (non-secret; injected by the webhook). ---
ENV_VAULT_ADDR: Final = "VAULT_ADDR"
ENV_VAULT_ROLE: Final = "VAULT_K8S_ROLE"
ENV_VAULT_TOKEN_PATH: Final = "VAULT_K8S_TOKEN_PATH"  # noqa: S105 - a variable name, not a password
ENV_VAULT_K8S_MOUNT: Final = "VAULT_K8S_MOUNT"
ENV_VAULT_KV_MOUNT: Final = "VAULT_KV_MOUNT"
ENV_VAULT_KV_PREFIX: Final = "VAULT_KV_PREFIX"
ENV_VAULT_TRANSIT_MOUNT: Final = "VAULT_TRANSIT_MOUNT"
ENV_VAULT_CACERT: Final = "VAULT_CACERT"
ENV_BOOT_TIMEOUT: Final = "GREENTIC_SECRETS_BOOT_TIMEOUT"

DEFAULT_TOKEN_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
DEFAULT_K8S_MOUNT: Final = "kubernetes"
DEFAULT_KV_MOUNT: Final = "secret"
DEFAULT_KV_PREFIX: Final = "greentic"
DEFAULT_TRANSIT_MOUNT: Final = "transit"
DEFAULT_BOOT_TIMEOUT_SECONDS: Final = 30.0
# "true" lets VAULT_ADDR be plain http:// (the token then travels unencrypted); injected by the webhook only
# for an environment with vault.insecureHttp: true. Only "true" and "false" are accepted.
ENV_VAULT_INSECURE_HTTP: Final = "GREENTIC_VAULT_INSECURE_HTTP"

# --- `exec --watch`: restart the worker when a secret has a new version. ---
ENV_SECRETS_WATCH: Final = "GREENTIC_SECRETS_WATCH"  # the interval, like --watch (the flag wins)
# Every check is one Vault read per referenced secret, for every worker: below this, a fleet of workers
# would be a steady load on Vault for little gain (Vault Agent's default template check is 5 minutes).
MIN_WATCH_INTERVAL_SECONDS: Final = 10.0
DEFAULT_GRACE_SECONDS: Final = 30.0  # like Kubernetes' default terminationGracePeriodSeconds
ON_CHANGE_RESTART: Final = "restart"
ON_CHANGE_EXIT: Final = "exit"

# --- Operator side only (`put`, `bootstrap`). The worker NEVER reads these. ---
ENV_VAULT_TOKEN: Final = "VAULT_TOKEN"  # noqa: S105 - a variable name, not a password

# --- Development store. ---
ENV_DEV_SECRETS_FILE: Final = "GREENTIC_DEV_SECRETS_FILE"
DEFAULT_DEV_SECRETS_FILE: Final = ".dev.secrets"

# --- Logging of the CLI. ---
ENV_LOG_LEVEL: Final = "GTC_SECRETS_LOG_LEVEL"

# --- References. ---
REFERENCE_SCHEME: Final = "secret://"


def role_name(env: str, tenant: str) -> str:
    """The Vault role a worker logs in as by default (the webhook's default role template)."""
    return f"gtc-{env}-{tenant}"


def team_role_name(env: str, tenant: str, team: str) -> str:
    """The per-team Vault role and policy (``bootstrap --team``; template ``gtc-{env}-{tenant}-{team}``)."""
    return f"gtc-{env}-{tenant}-{team}"


def transit_key_name(env: str, tenant: str) -> str:
    """The per env + tenant wrapping key: one key (and one batch call) for all of a worker's references."""
    return f"gtc-{env}-{tenant}"
