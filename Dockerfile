# syntax=docker/dockerfile:1
# Build stage: compilers live here only.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
# The versions `make test` ran on (constraints/tested.txt, written by `make lock`), so a
# rebuild installs what was tested, not whatever is newest that day.
COPY constraints ./constraints
COPY shell ./shell
COPY core ./core
COPY classifiers ./classifiers
COPY consumers ./consumers
COPY sinks ./sinks
RUN python -m venv /opt/pomocore && /opt/pomocore/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/pomocore/bin/pip install --no-cache-dir -c constraints/tested.txt .

# Runtime stage: no compilers, non-root, works with a read-only root filesystem.
FROM python:3.11-slim
RUN groupadd --system --gid 10001 pomocore \
    && useradd --system --uid 10001 --gid pomocore --no-create-home --shell /usr/sbin/nologin pomocore
COPY --from=build /opt/pomocore /opt/pomocore
ENV PATH=/opt/pomocore/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/pomocore-metrics \
    POMOCORE_METRICS_PORT=9464
USER 10001:10001
# /tmp must be a writable volume (emptyDir / tmpfs) when the root filesystem is read-only.
VOLUME ["/tmp"]
EXPOSE 9464
STOPSIGNAL SIGTERM
# Readiness without HTTP tools in the image (Redis, MongoDB, consumer group).
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 CMD ["pomocore", "check"]
ENTRYPOINT ["pomocore"]
CMD ["run"]
