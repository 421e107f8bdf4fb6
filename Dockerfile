# syntax=docker/dockerfile:1
# bankcore application image: gunicorn (web), Celery worker and Celery beat all run from it.
#
# Two stages: the builder compiles wheels (mysqlclient needs a C compiler and the client headers);
# the runtime stage gets only the wheels and the shared client library, so no compiler, headers or
# curl ship in production. Pinned to Debian bookworm so `libmariadb3` is a known package name.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        default-libmysqlclient-dev build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY requirements/ requirements/
# The lock (make lock): every package pinned with its hashes; a file that does not match stops the build.
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements/prod.lock

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=bankcore.settings.production \
    BANKCORE_VAR_DIR=/app/var \
    LOG_DIR=/app/logs

# Runtime shared library for mysqlclient only (libmariadb3 is what default-libmysqlclient-dev
# links against on Debian bookworm).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 bankcore \
    && useradd --system --uid 10001 --gid bankcore --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin bankcore

COPY --from=builder /wheels /wheels
COPY requirements/ /tmp/requirements/
RUN pip install --no-index --find-links=/wheels -r /tmp/requirements/prod.txt \
    && rm -rf /wheels /tmp/requirements

WORKDIR /app
COPY . .

# collectstatic imports the production settings, which refuse to start without real secrets.
# These throw-away values exist only for this one RUN step; they are not in the image's ENV and
# the running containers get their secrets from .env.
RUN SECRET_KEY=build-only-collectstatic-secret-not-used-at-runtime-0000 \
    JWT_SECRET_KEY=build-only-collectstatic-jwt-secret-not-used-at-runtime-0000 \
    AUDIT_CHAIN_KEY=build-only-collectstatic-audit-chain-key-not-used-at-runtime-0000 \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/logs /app/var \
    && rm -f /app/var/*.sqlite3 \
    && chown -R bankcore:bankcore /app/logs /app/var

USER bankcore

# Inside a container every interface is the container's own: the app and the worker's metrics
# listen on all of them (the settings' defaults are loopback, for native runs).
ENV GUNICORN_BIND=0.0.0.0:8000 CELERY_METRICS_ADDR=0.0.0.0

EXPOSE 8000

# The image has no curl: ask the app's health endpoint with the Python standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "bankcore.wsgi:application"]
