# imgclass serving image: FastAPI + onnxruntime, no TensorFlow. See docs/deployment.md.
#
# Targets:
#   runtime (default)  CPU image on python:3.11-slim-bookworm
#   gpu                onnxruntime-gpu on an nvidia/cuda cuDNN runtime base
#
# Nothing is downloaded during the build: run scripts/build-wheelhouse first. It fills
# .wheelhouse/ with every wheel the server needs plus a fully pinned requirements file,
# and pip installs from there with --no-index (the same path air-gapped users take).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31 is built against CUDA 13 + cuDNN 9. Ubuntu 22.04 ships python3.11.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu22.04

# ---------------------------------------------------------------- CPU: build the venv
FROM ${PYTHON_IMAGE} AS builder
# Which pinned set to install: requirements.txt (the server), or requirements-milvus.txt
# (also pymilvus, for IMGCLASS_VECTOR_STORE=milvus://...; scripts/build-wheelhouse --milvus).
ARG REQUIREMENTS=requirements.txt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY .wheelhouse/ /wheelhouse/
# `python3 -m venv` rather than a fixed path: the official image has its interpreter in
# /usr/local/bin, Debian-based stand-ins in /usr/bin. requirements.txt pins the complete
# dependency closure, so --no-deps installs exactly that set and `pip check` proves it whole.
# pip and setuptools leave afterwards: nothing is installed at run time.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        --no-deps --requirement "/wheelhouse/${REQUIREMENTS}" \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -c "import app.main, onnxruntime" \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
 && rm -rf /opt/venv/share
# Bundles are written 0644 (folders 0755) by training/export.py, but a checkout or a copy made
# under a strict umask may not be: make them world-readable here so the unprivileged service
# can read them, without a second copy layer in the final image.
COPY models/ /bundles/
RUN chmod -R u=rwX,go=rX /bundles

# ---------------------------------------------------------------- CPU: the served image
FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid (10001) so a host folder mounted at /data can be chowned to it.
RUN groupadd --system --gid 10001 imgclass \
 && useradd --system --uid 10001 --gid imgclass --home-dir /app \
        --no-create-home --shell /usr/sbin/nologin imgclass \
 && mkdir -p /app/models /data \
 && chown imgclass:imgclass /data
COPY --from=builder /opt/venv /opt/venv
# jemalloc (from .wheelhouse/jemalloc, Debian's libjemalloc2): `python -m app` preloads it
# (IMGCLASS_ALLOCATOR=auto), which keeps RSS flat under long mixed loads (docs/operations.md).
COPY --from=builder /wheelhouse/jemalloc/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2
COPY --from=builder /wheelhouse/jemalloc/copyright /usr/local/share/doc/libjemalloc2/copyright
# Bundles baked in, owned by root so the service cannot alter them; mount your own
# folder over /app/models (read-only is enough) to serve other bundles.
COPY --from=builder /bundles/ /app/models/
# One worker process: onnxruntime already spreads a request over the cores
# (IMGCLASS_INTRA_OP_THREADS=0 gives each pipeline its share of the cores the process may
# use, which follows the container's CPU limit; see docs/deployment.md).
# ORT_DISABLE_TELEMETRY: onnxruntime >= 1.32 sends usage events to Microsoft from Linux too and
# keeps a device id under $HOME/.cache; on the read-only root it only logs a non-JSON warning.
# A self-hosted, possibly air-gapped service sends nothing: this opts out before any session.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    IMGCLASS_HOST=0.0.0.0 \
    IMGCLASS_PORT=8000 \
    IMGCLASS_WORKERS=1 \
    IMGCLASS_INTRA_OP_THREADS=0 \
    IMGCLASS_PROVIDERS=cpu \
    IMGCLASS_MODELS_DIR=/app/models \
    IMGCLASS_DATA_DIR=/data
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# /readyz is 200 only once bundles are loaded and warmed up; app.probe exits non-zero
# otherwise (over HTTPS when IMGCLASS_TLS_CERTFILE is set), so the container turns unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "app.probe"]
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------- GPU: base with python3.11
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------- GPU: build the venv
FROM gpu-base AS gpu-builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY .wheelhouse/ /wheelhouse/
# requirements-gpu.txt swaps onnxruntime for onnxruntime-gpu (both provide the
# `onnxruntime` module and must never be installed together); --no-deps keeps pip from
# pulling the CPU wheel back in for imgclass's own requirement.
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        --no-deps --requirement /wheelhouse/requirements-gpu.txt \
 && /opt/venv/bin/python -c "import app.main, onnxruntime" \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
 && rm -rf /opt/venv/share
COPY models/ /bundles/
RUN chmod -R u=rwX,go=rX /bundles

# ---------------------------------------------------------------- GPU: the served image
FROM gpu-base AS gpu
RUN groupadd --system --gid 10001 imgclass \
 && useradd --system --uid 10001 --gid imgclass --home-dir /app \
        --no-create-home --shell /usr/sbin/nologin imgclass \
 && mkdir -p /app/models /data \
 && chown imgclass:imgclass /data
COPY --from=gpu-builder /opt/venv /opt/venv
COPY --from=gpu-builder /wheelhouse/jemalloc/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2
COPY --from=gpu-builder /wheelhouse/jemalloc/copyright /usr/local/share/doc/libjemalloc2/copyright
COPY --from=gpu-builder /bundles/ /app/models/
# providers=cuda fails start-up when CUDA is unusable instead of silently using the CPU.
# ORT_DISABLE_TELEMETRY=1: no usage events to Microsoft, no device id file (see runtime).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    IMGCLASS_HOST=0.0.0.0 \
    IMGCLASS_PORT=8000 \
    IMGCLASS_WORKERS=1 \
    IMGCLASS_INTRA_OP_THREADS=0 \
    IMGCLASS_PROVIDERS=cuda \
    IMGCLASS_MODELS_DIR=/app/models \
    IMGCLASS_DATA_DIR=/data
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-m", "app.probe"]
CMD ["python", "-m", "app"]

# The CPU image is the default when no --target is given.
FROM runtime
