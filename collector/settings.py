"""The collector's one typed settings object, loaded once from the environment and CLI flags.

Every field is a `CAPTURE_<NAME>` environment variable and a `--<name>` flag (flags win).
A bad value fails start-up with an error naming the variable. No other module reads os.environ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

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
    kafka_bootstrap_servers: str | None = None
    kafka_client_id: str = "event-capture-collector"
    # aiokafka compresses on the event loop: zstd (via cramjam) costs ~1/10 of its gzip-9
    kafka_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = "zstd"
    # Batches already fill while the previous one is in flight; linger only adds delay.
    kafka_linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    kafka_request_timeout_ms: PositiveInt = 10_000
    topic_prefix: str = "events."
    dead_letter_topic: str = "events._invalid"
    # The deadline for the sink to acknowledge a request's events before the answer is 503.
    sink_timeout_s: PositiveFloat = 5.0
    retry_after_s: PositiveInt = 2
    max_body_bytes: PositiveInt = 1_048_576
    # Request bytes being processed at once in this process; past it, 503 at once (no queue).
    max_inflight_bytes: PositiveInt = 67_108_864
    max_decompressed_bytes: PositiveInt = 8_388_608
    # Key for hashing `x-pii: hash` properties (HMAC-SHA256); unset: plain SHA-256.
    pii_hash_key: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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
