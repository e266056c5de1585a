"""The collector's one typed settings object, loaded once from the environment and CLI flags.

Every field is a `CAPTURE_<NAME>` environment variable and a `--<name>` flag (flags win).
A bad value fails start-up with an error naming the variable. No other module reads os.environ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from collector.client_ip import parse_networks
from collector.limits import (
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
)
from event_schemas.errors import split_validation_error

ENV_PREFIX = "CAPTURE_"

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class SettingsError(ValueError):
    """A setting is missing, malformed or contradicts another; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Processes sharing the port (SO_REUSEPORT); more than one needs the kafka sink.
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Which sink takes accepted events; unset means kafka when bootstrap servers are set,
    # else the embedded file sink.
    sink: Literal["file", "kafka", "memory"] | None = None
    data_dir: str = "data"
    schemas_dir: str | None = None
    # TOML file with write keys ([[sources]]) and routing rules ([routing]); see config_file.py
    config_file: str | None = None
    # How far a signed request's X-Capture-Timestamp may be from the collector's clock.
    signature_tolerance_s: PositiveInt = 300
    kafka_bootstrap_servers: str | None = None
    kafka_client_id: str = "event-capture-collector"
    # aiokafka compresses on the event loop: zstd (via cramjam) costs ~1/10 of its gzip-9
    kafka_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = "zstd"
    # Batches already fill while the previous one is in flight; linger only adds delay.
    kafka_linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    kafka_request_timeout_ms: PositiveInt = 10_000
    topic_prefix: str = "events."
    # Topic per event, with {event} and {version}, e.g. `events.{event}.v{version}`; when set
    # it replaces topic_prefix (which means `<prefix>{event}`). A schema's x-topic still wins.
    topic_template: str | None = None
    dead_letter_topic: str = "events._invalid"
    # The deadline for the sink to acknowledge a request's events before the answer is 503.
    sink_timeout_s: PositiveFloat = 5.0
    retry_after_s: PositiveInt = 2
    # On SIGTERM the listener closes at once; requests in flight finish (each bounded by
    # sink_timeout_s), then the sink flushes: both within this (see collector/shutdown.py).
    shutdown_timeout_s: PositiveFloat = 15.0
    max_body_bytes: PositiveInt = 1_048_576
    # Request bytes being processed at once in this process; past it, 503 at once (no queue).
    max_inflight_bytes: PositiveInt = 67_108_864
    max_decompressed_bytes: PositiveInt = 8_388_608
    # The whole body must arrive within this; a slower client gets 408 and the connection
    # closes (aiohttp has no body timeout of its own).
    body_read_timeout_s: PositiveFloat = 10.0
    # One event's `properties` + `context` as sent, in bytes; larger: dead-lettered alone.
    max_event_bytes: PositiveInt = DEFAULT_MAX_EVENT_BYTES
    # Events in one request; more: the whole request gets 413 too_many_events.
    max_batch_events: PositiveInt = DEFAULT_MAX_BATCH_EVENTS
    # Nesting levels of arrays/objects inside an event's properties or context; deeper: 400.
    max_json_depth: Annotated[int, msgspec.Meta(ge=1, le=256)] = DEFAULT_MAX_JSON_DEPTH
    # Key for hashing `x-pii: hash` properties (HMAC-SHA256); unset: plain SHA-256.
    pii_hash_key: str | None = None
    # Peers (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed for the client IP.
    trusted_proxies: str | None = None
    # Keep only the network part of client IPs (IPv4 /24, IPv6 /48); false keeps full IPs.
    ip_anonymize: bool = True
    # Drop events whose event_id this process acknowledged in the last N seconds (0: off).
    dedup_window_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # At most this many remembered ids (the oldest are forgotten first): bounds the memory.
    dedup_max_ids: PositiveInt = 100_000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `json`: one JSON object per line (ts, level, logger, message, extra fields) for shippers
    log_format: Literal["text", "json"] = "text"

    @property
    def sink_kind(self) -> str:
        if self.sink is not None:
            return self.sink
        return "kafka" if self.kafka_bootstrap_servers else "file"


FIELDS: tuple[str, ...] = Settings.__struct_fields__


def env_var(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build Settings from `CAPTURE_*` variables, then `overrides` (CLI flags, already typed)."""
    raw: dict[str, Any] = {}
    for field in FIELDS:
        value = (environ or {}).get(env_var(field))
        if value is not None and value != "":
            raw[field] = value
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            raise SettingsError(f"unknown setting `{key}`")
        if value is not None:
            raw[key] = value
    try:
        # strict=False lets the strings from the environment become ints and floats.
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        path, message = split_validation_error(exc)
        field = path.removeprefix("$.")
        raise SettingsError(
            f"invalid setting {env_var(field)} (--{_flag(field)}): {message}"
        ) from exc
    try:
        parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"invalid setting {env_var('trusted_proxies')}: {exc}") from exc
    if settings.sink_kind == "kafka" and not settings.kafka_bootstrap_servers:
        raise SettingsError(
            f"{env_var('sink')}=kafka needs {env_var('kafka_bootstrap_servers')} (host:port,...)"
        )
    if settings.workers > 1 and settings.sink_kind != "kafka":
        raise SettingsError(
            f"{env_var('workers')}={settings.workers} needs the kafka sink:"
            f" the {settings.sink_kind} sink is owned by a single process"
        )
    return settings


def _flag(field: str) -> str:
    return field.replace("_", "-")
