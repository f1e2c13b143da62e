# kanscope image: API + dashboard (`kanscope serve`) or a Celery worker (`kanscope worker`).
#
# CPU torch by default (small image). For GPU workers build with a CUDA wheel index that carries
# the same torch version (TORCH_VERSION below; the build stops if it has none):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t kanscope:cuda .
# docker-compose.yml does this for the `worker` service. Every other version comes from
# requirements.lock, so the API, the workers and CI run the same set.
FROM python:3.11-slim AS base

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The torch every kanscope process runs (API, workers, CI: requirements.lock pins the same).
# The build fails if the chosen index has no build of this version, never silently takes another.
ARG TORCH_VERSION=2.13.0
# Optional features baked in (pyproject's extras): PostgreSQL, Celery + Redis, alloy featurisation
ARG KANSCOPE_EXTRAS=postgres,distributed,alloys

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KANSCOPE_DATA_DIR=/data \
    KAN_CORE_NATIVE_DIR=/opt/kan_core/native

# libgomp: the OpenMP threading layer of kan_core's numba CPU kernels; g++: kan_core's C++
# operators are built at image build time for this CPU's x86-64 level, and again (once, into
# KAN_CORE_NATIVE_DIR) if the image runs on a CPU of another level
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 g++ \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the chosen wheel index, so the layer is cached across code changes.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Dependencies next, at the locked versions (only pyproject or the lock invalidate this layer):
# the project's dependencies and those of the chosen extras, read from pyproject.toml.
WORKDIR /src
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in '${KANSCOPE_EXTRAS}'.split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
    > requirements.txt \
    && pip install -c requirements.lock -r requirements.txt

# The project itself, installed as a wheel (migrations/ and frontend_assets/ go inside it); the
# sources are removed so that every process, the cache warm-up included, imports the installed
# copy.
COPY README.md ./
COPY kan_core ./kan_core
COPY app ./app
COPY migrations ./migrations
COPY frontend_assets ./frontend_assets
RUN pip install --no-deps . && cd / && rm -rf /src
WORKDIR /srv
# bake the numba kernel cache (next to the installed kan_core) and the native operators in
RUN python -m kan_core.fused

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
