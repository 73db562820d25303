# syntax=docker/dockerfile:1
# One image for every wattcast node (simulator, predictor, collector) and the CLI.
# The services of docker-compose.yml differ only by command and environment:
#     command: ["python", "-m", "predictor"]   environment: WATTCAST_MODEL=lstm ...
# Build: docker compose build   (or: docker build -t wattcast:local .)

# --- build: a wheel of this repository --------------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime -----------------------------------------------------------------------
FROM python:3.11-slim-bookworm
# OPENBLAS_NUM_THREADS=1: a node multiplies tiny matrices; a BLAS thread pool per node
# only costs start-up CPU and competes for the cores (wattcast/config.py).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies first, from pyproject.toml alone: this layer is rebuilt only when
# they change, not on every source edit.
# libgomp1: OpenMP, which LightGBM (the gbm models) links against; the slim image lacks it.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# The trained LSTM artifacts (the predictors run them with NumPy).
COPY models /opt/wattcast/models
ENV WATTCAST_MODELS_DIR=/opt/wattcast/models

# An unprivileged user; /data is where the collector keeps its store and reports,
# /state where the predictors keep their per-house state (both volumes in compose)
# (a named volume mounted there starts out owned by this user).
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home wattcast \
    && mkdir -p /data /state && chown wattcast:wattcast /data /state
USER wattcast
WORKDIR /data

CMD ["python", "-m", "wattcast", "--help"]
