# The collector image: `docker compose up` builds it and runs it next to a Kafka broker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the two wheels are built from: the collector (pyproject.toml) and the SDK it
# depends on (sdk-python/, with capture_sdk and event_schemas), which is not on an index.
COPY pyproject.toml README.md ./
COPY sdk-python ./sdk-python
COPY capture_sdk ./capture_sdk
COPY collector ./collector
COPY event_schemas ./event_schemas
RUN pip install ./sdk-python . \
    && useradd --system --uid 10001 --home-dir /app --no-create-home capture \
    && mkdir -p /app/data \
    && chown capture /app/data

USER capture

# The collector is configured only through CAPTURE_* variables (collector/settings.py).
ENV CAPTURE_HOST=0.0.0.0 \
    CAPTURE_PORT=8080
EXPOSE 8080

CMD ["capture", "serve"]
