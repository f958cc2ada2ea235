# syntax=docker/dockerfile:1
# modelsvc image: configured only through environment variables (see .env.template); configs in /app/configs.
#   docker build -t modelsvc .                                   CPU torch (default)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t modelsvc:cuda .
#   docker run --rm -e MODELSVC_PROFILE=production -e MODELSVC_HIVE__HOST=hs2 modelsvc doctor --json
#   docker run --rm ... modelsvc modelsvc train       the same: a leading `modelsvc` is accepted (docker-entrypoint.sh)
#   docker run --rm -p 8080:8080 -e MODELSVC_PROFILE=production modelsvc serve --port 8080
ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: a venv with torch (pinned, from TORCH_INDEX) and the package wheel with extras hive+redis+s3+serve --------------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from its own index as an extra index (its +cpu / +cuXXX build wins over the plain release):
# CPU by default, CUDA when TORCH_INDEX says so
RUN pip install --extra-index-url "${TORCH_INDEX}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps -w /wheels . \
 && pip install "$(ls /wheels/modelsvc-*.whl)[hive,redis,s3,serve]" \
 && modelsvc --version

# -- final: slim runtime, non-root ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELSVC_CONFIG_DIR=/app/configs \
    MODELSVC_PATHS__ROOT=/app/data \
    MODELSVC_SERVING__HOST=0.0.0.0
RUN useradd --create-home --uid 10001 --user-group modelsvc
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY configs ./configs
COPY feature_repo ./feature_repo
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /app/data && chown -R modelsvc:modelsvc /app/data /app/feature_repo
USER modelsvc
VOLUME ["/app/data"]
EXPOSE 8080
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["--help"]
