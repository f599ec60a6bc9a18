# syntax=docker/dockerfile:1
# The demo worker: gtc-secrets resolves WEBHOOK_SECRET=secret://... from Vault, then runs the tiny HTTP
# service of runtime/gtc_secrets/demo_worker.py. Build from the repository root (`make images`):
#   docker build -f deploy/docker/worker.Dockerfile -t gtc-demo-worker:dev \
#     --build-arg VAULT_CA_PEM="$(cat deploy/vault/tls/ca.crt)" .
# VAULT_CA_PEM: the CA of the demo Vault (deploy/vault), added to the image's trust store. Workers only
# talk https:// to Vault and the webhook injects no CA path, so the image must trust Vault's CA itself,
# as a real worker image trusts its company CA. A CA certificate is public: a build argument is fine.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and every dependency as wheels ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY runtime ./runtime
RUN pip wheel --wheel-dir /wheels .

# --- run ---
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gtc-secrets-admission
ARG VAULT_CA_PEM=""
# Checked with openssl first: a build with a broken CA fails here, not as a TLS error in the cluster.
RUN if [ -n "$VAULT_CA_PEM" ]; then \
        printf '%s\n' "$VAULT_CA_PEM" > /usr/local/share/ca-certificates/gtc-demo-vault-ca.crt \
        && openssl x509 -noout -subject -in /usr/local/share/ca-certificates/gtc-demo-vault-ca.crt \
        && update-ca-certificates; \
    else \
        echo "no VAULT_CA_PEM: this image trusts only the public CAs"; \
    fi
USER 65532:65532
EXPOSE 8080
# Every env var holding a secret:// reference is resolved before the worker starts; the values exist only
# in the worker process's environment.
ENTRYPOINT ["gtc-secrets", "exec", "--", "python", "-m", "gtc_secrets.demo_worker"]
