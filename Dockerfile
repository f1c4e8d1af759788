# orca-token-daemon as a container. Configuration by environment; secrets as files under
# /run/secrets (Docker/compose/Kubernetes secrets), read through the *_FILE variables, which are
# relative to CREDENTIALS_DIRECTORY=/run/secrets. See deploy/compose.yaml and README.

# BASE: the registry image users pull; `make image` passes a local Debian 12 base with the same
# Python layout where no registry is reachable (buildah, no Docker engine).
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/orca
COPY requirements.lock ./
# Exactly what CI tested, hash-checked; the audit extra (psycopg 3) is in the lock so that
# `orca-tokens sync` and ORCA_AUDIT_DSN work.
RUN /opt/orca/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY daemon ./daemon
RUN /opt/orca/bin/pip install --no-cache-dir --no-deps .

FROM ${BASE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin orca
COPY --from=build /opt/orca /opt/orca
ENV PATH=/opt/orca/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CREDENTIALS_DIRECTORY=/run/secrets \
    ORCA_LOG_FORMAT=json \
    ORCA_HEALTH_ADDR=127.0.0.1:9108
WORKDIR /tmp
USER 10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["orca-tokens", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["orca-tokens"]
CMD ["run"]
