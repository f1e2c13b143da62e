# kanscope image: API + dashboard (`kanscope serve`) or a Celery worker (`kanscope worker`).
#
# CPU torch by default (small image). For GPU workers build with a CUDA wheel index:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 -t kanscope:cuda .
# docker-compose.yml does this for the `worker` service.
FROM python:3.11-slim AS base

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KANSCOPE_DATA_DIR=/data \
    KAN_CORE_NATIVE_DIR=/opt/kan_core/native

WORKDIR /app

# libgomp: the OpenMP threading layer of kan_core's numba CPU kernels; g++: kan_core's C++
# operators are built at image build time for this CPU's x86-64 level, and again (once, into
# KAN_CORE_NATIVE_DIR) if the image runs on a CPU of another level
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 g++ \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the chosen wheel index, so the layer is cached across code changes.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch${TORCH_VERSION:+==${TORCH_VERSION}}"

# Dependencies next (only pyproject changes invalidate this layer), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p kan_core app && touch kan_core/__init__.py app/__init__.py \
    && pip install . && pip uninstall -y kanscope

COPY kan_core ./kan_core
COPY app ./app
# bake the numba kernel cache and the native operators in
RUN pip install --no-deps . && python -m kan_core.fused

# Never run as root; /data holds the SQLite file when no database URL is given.
RUN useradd --create-home --uid 10001 kanscope && mkdir -p /data && chown kanscope /data \
    && chown -R kanscope /opt/kan_core
USER kanscope
VOLUME ["/data"]

EXPOSE 8050

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8050/api/health', timeout=4).status == 200 else 1)"

# Listens on all interfaces *inside the container only*; docker-compose.yml publishes the port
# on the host's 127.0.0.1.
CMD ["kanscope", "serve", "--host", "0.0.0.0", "--port", "8050"]
