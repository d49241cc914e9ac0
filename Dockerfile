# syntax=docker/dockerfile:1.7
# The runtime (Ray Serve app), two targets:
#   l4 (default, last): Cloud Run GPU, one L4, driver 535 / CUDA 12.2; `avatar serve --profile l4` on $PORT,
#       production weights baked in from build/models (README "Deploy": fetch them there first).
#   cpu: what docker-compose.yml runs locally, bundled models only, no torch.
#     docker build -t runtime:l4 .                  docker build --target cpu -t runtime:cpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- dependencies shared by both targets: a venv at /opt/venv, the source at /app ----------------------
FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# llama-cpp-python (a base dependency) is an sdist: it compiles here, never in the runtime stage.
# Debian's package versions move with security updates; pinning them would break rebuilds, not secure them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md serve_config.yaml ./
COPY engines engines
COPY realtime_avatar realtime_avatar
COPY deployments deployments
COPY graphs graphs
COPY signaling signaling

FROM build-base AS build-cpu
# The cpu profile imports no torch, and nothing in the base dependencies pulls one.
RUN pip install -e .

FROM build-base AS build-l4
# CUDA 12 wheels: Cloud Run's L4 driver (535) runs CUDA 12.x, not the CUDA 13 builds PyPI serves by
# default. One resolve: torch pinned to the dev extra's version with a cu129 tag, vLLM's cu129 wheel
# (satisfies the gpu extra's vllm==0.29.0), the gpu and xtts extras; nothing else can pull a second torch.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu129
ARG VLLM_WHEEL=https://github.com/vllm-project/vllm/releases/download/v0.29.0/vllm-0.29.0+cu129-cp38-abi3-manylinux_2_35_x86_64.whl
# The project (a local path) and a wheel URL are pinned by pyproject.toml and the URL itself.
# hadolint ignore=DL3013
RUN pip install --extra-index-url "${TORCH_INDEX}" "torch==2.13.0+cu129" "vllm @ ${VLLM_WHEEL}" -e ".[gpu,xtts]"

# ---- runtime images ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
# tini: PID 1 that forwards SIGTERM to `avatar serve` and reaps Ray's worker processes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin avatar \
 && mkdir -p /var/cache/avatar/models /var/cache/avatar/assets \
 && chown -R avatar:avatar /var/cache/avatar
# Ray: no usage report (nothing leaves the container), the object store in /dev/shm (sized by the
# platform: Cloud Run's memory volume, compose's shm_size; serve.object_store_mb must fit in it).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 \
    AVATAR_CACHE_DIR=/var/cache/avatar PORT=8080
WORKDIR /app
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]

FROM runtime-base AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
COPY --from=build-cpu /app /app
ENV AVATAR_PROFILE=cpu
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# serve_config.yaml's cpu profile binds 127.0.0.1; a container must listen on every interface.
CMD ["sh", "-c", "exec avatar serve --profile cpu --host 0.0.0.0 --port 8000"]

FROM runtime-base AS l4
COPY --from=build-l4 /opt/venv /opt/venv
COPY --from=build-l4 /app /app
# Baked weights (README "cold start": Cloud Run streams image layers from disk, while a download at start
# would land in the instance's in-memory filesystem). Root-owned: the service only reads them.
COPY build/models /var/cache/avatar/models
# The build fails here, not the first call, if a weight the l4 profile needs is missing.
RUN avatar models check --profile l4
ENV AVATAR_PROFILE=l4
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["sh", "-c", "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}/readyz', timeout=4)\""]
# serve_config.yaml's l4 profile listens on 0.0.0.0:${PORT} (Cloud Run sets PORT).
CMD ["avatar", "serve", "--profile", "l4"]
