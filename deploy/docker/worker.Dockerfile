# syntax=docker/dockerfile:1
# The demo worker: gtc-secrets resolves WEBHOOK_SECRET=secret://... from Vault, then runs the tiny HTTP
# service of runtime/gtc_secrets/demo_worker.py, and restarts it when the secret is rotated. Build from the repository root (`make images`):
#   docker build -f deploy/docker/worker.Dockerfile -t gtc-demo-worker:dev .
# No Vault CA is baked in: the webhook projects the demo Vault's CA from the namespace's ConfigMap
# gtc-vault-ca (config vault.caConfigMap) and points VAULT_CACERT at it, so one image serves any Vault.
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
USER 65532:65532
EXPOSE 8080
# Every env var holding a secret:// reference is resolved before the worker starts; the values exist only
# in the worker process's environment. --watch 1m: gtc-secrets stays as the worker's parent (forwarding
# signals, reaping orphans as PID 1) and restarts it with the new value within about a minute of a
# `gtc-secrets put`, one KV metadata read per minute for this worker's one reference. A minute keeps a
# rotated webhook secret's outage short at a load Vault does not notice; a worker with many references
# and many replicas may prefer 5m (Vault Agent's default template interval).
ENTRYPOINT ["gtc-secrets", "exec", "--watch", "1m", "--", "python", "-m", "gtc_secrets.demo_worker"]
