# syntax=docker/dockerfile:1.7
#
# The MLflow tracking server image used by infra/k8s (Deployment `tauray-mlflow`). MLflow's own
# image has neither the PostgreSQL driver nor boto3, so this one adds them; it stays small (no
# torch, no Ray). Build from the repository root:
#
#   docker build -f infra/docker/mlflow.Dockerfile -t REGISTRY/tauray-mlflow:3.17.2 .
#
# MLflow's version matches the client inside the tauray image (infra/docker/constraints.txt).

FROM python:3.12.12-slim-bookworm

ARG MLFLOW_UID=1000
ARG MLFLOW_GID=1000

LABEL org.opencontainers.image.title="tauray-mlflow" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# mlflow[auth] brings Flask-WTF for `mlflow server --app-name basic-auth`; psycopg2-binary is the
# PostgreSQL driver of the backend store; boto3 reaches S3 / MinIO for --artifacts-destination.
RUN pip install --no-cache-dir \
        "mlflow[auth]==3.17.2" \
        "psycopg2-binary==2.9.13" \
        "boto3==1.44.8" \
    && rm -rf /root/.cache \
    && groupadd --gid "${MLFLOW_GID}" mlflow \
    && useradd --uid "${MLFLOW_UID}" --gid "${MLFLOW_GID}" --create-home --shell /usr/sbin/nologin mlflow \
    && mlflow --version

USER ${MLFLOW_UID}:${MLFLOW_GID}
ENV HOME=/home/mlflow
WORKDIR /home/mlflow
EXPOSE 5000

ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
