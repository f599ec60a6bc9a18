# syntax=docker/dockerfile:1
# The admission webhook (gtc-admission). Build from the repository root (`make images`):
#   docker build -f deploy/docker/webhook.Dockerfile -t gtc-admission:dev .
# Non-root (65532), nothing written at run time: fit for readOnlyRootFilesystem. The Deployment
# (deploy/webhook/deployment.yaml) passes the arguments; the default CMD is the same command line.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and every dependency as wheels, so the final stage needs no compiler ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see webhook.Dockerfile.dockerignore).
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
# The wheels are bind-mounted, not copied: they never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gtc-secrets-admission
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["gtc-admission"]
CMD ["serve", "--config", "/etc/gtc-admission/config/config.yaml", "--host", "0.0.0.0", "--port", "8443", \
     "--tls-cert", "/etc/gtc-admission/tls/tls.crt", "--tls-key", "/etc/gtc-admission/tls/tls.key"]
