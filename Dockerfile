# The collector image: `docker compose up` builds it and runs it next to a Kafka broker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the wheel is built from (see [tool.hatch.build.targets.wheel] in pyproject.toml).
COPY pyproject.toml README.md ./
COPY capture_sdk ./capture_sdk
COPY collector ./collector
COPY event_schemas ./event_schemas
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --no-create-home capture \
    && mkdir -p /app/data \
    && chown capture /app/data

USER capture

# The collector is configured only through CAPTURE_* variables (collector/settings.py).
ENV CAPTURE_HOST=0.0.0.0 \
    CAPTURE_PORT=8080
EXPOSE 8080

CMD ["capture", "serve"]
