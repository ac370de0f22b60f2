# The sync_pipeline code location as a container image, for Dagster's Helm chart (deploy/helm/values.yaml)
# or any container platform. The image serves the definitions over gRPC on port 4000; the webserver and
# the daemon run Dagster's own images and reach it through the workspace. The same image runs each run's
# pod (K8sRunLauncher) and, with `executor: {kind: k8s}` in the sync config, each step's pod.
#
#   docker build -t sync-pipeline:0.1.0 .
#
# The sync config is read from $SYNC_PIPELINE_CONFIG (mount it there; the Helm values mount a ConfigMap),
# and the secrets it names as ${VAR} come from the environment (Kubernetes Secrets in the Helm values).

# -- build: a wheel of this project only; dependencies are resolved in the final stage --------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sync_pipeline ./sync_pipeline
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# -- runtime -----------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    SYNC_PIPELINE_CONFIG=/etc/sync_pipeline/sync.yaml

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/dagster --create-home --shell /usr/sbin/nologin dagster \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/app /etc/sync_pipeline \
    && chown -R 10001:10001 /opt/dagster

# Every driver the engine and the instance need is a binary wheel (psycopg[binary], psycopg2-binary,
# PyMySQL is pure Python): no compiler in the image. The Dagster family is pinned by pyproject.toml.
COPY --from=build /dist /dist
RUN pip install --no-cache-dir "$(find /dist -name 'sync_pipeline-*.whl')[postgres,k8s]" \
    && rm -rf /dist

USER 10001:10001
WORKDIR /opt/dagster/app
EXPOSE 4000

# The Helm chart replaces this command with its own `dagster code-server start ... -p 4000` and a
# gRPC health probe; these are for running the image on its own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "sync_pipeline.definitions"]
