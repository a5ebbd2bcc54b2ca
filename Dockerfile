# One image for the API, the report worker and Locust (master and workers): see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing a locustfile does not reinstall them.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[load,postgres]"

COPY locustfiles ./locustfiles

# Never run as root; /results is where the Locust master writes (a bind mount in compose);
# /run/cachelab holds a generated seed password (a named volume in compose, so it keeps this owner).
RUN useradd --create-home --uid 10001 cachelab \
    && mkdir -p /results /run/cachelab \
    && chown cachelab:cachelab /results /run/cachelab \
    && chmod 0700 /run/cachelab
USER cachelab

# API, Locust web UI, Locust master <- workers.
EXPOSE 8000 8089 5557

CMD ["cachelab", "serve", "--host", "0.0.0.0", "--job-workers", "0"]
