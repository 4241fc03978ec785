# The app image: the `backfill` command line (worker, exporter, migrate, ...).
# docker-compose.yml runs it as the `migrate`, `worker` and `exporter` services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY backfills ./backfills
COPY migrations ./migrations
COPY monitoring ./monitoring
COPY worker ./worker
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home backfill

USER backfill
# SIGTERM lets a worker finish its batch; compose gives it stop_grace_period to do so.
STOPSIGNAL SIGTERM
CMD ["backfill", "--help"]
