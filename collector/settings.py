"""The collector's one typed settings object, loaded once from the environment and CLI flags.

Every field is a `CAPTURE_<NAME>` environment variable and a `--<name>` flag (flags win).
A bad value fails start-up with an error naming the variable: types and ranges here, formats
(topics, bootstrap servers) in `check_settings`. No I/O, and no other module reads os.environ;
what needs the machine (data dir, port) is checked by `collector.startup`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from collector.client_ip import parse_networks
from collector.limits import (
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
)
from event_schemas.errors import split_validation_error
from event_schemas.topics import topic_error, topic_prefix_error

ENV_PREFIX = "CAPTURE_"

# Upper bounds keep every number in the range the code below can use: `inf` as a deadline,
# or a byte cap past what zlib takes as a length (C ssize_t), would only fail per request.
MAX_SECONDS = 86_400.0
MAX_BYTES = 1 << 40
# Kafka's own type for its millisecond settings is a Java int.
MAX_KAFKA_MS = (1 << 31) - 1
# Hot keys: past these a "threshold" means no threshold, or the tracked pairs no memory bound.
MAX_HOT_KEY_RATE_PER_S = 1e9
MAX_HOT_KEY_BURST = 1 << 31
MAX_HOT_KEYS = 10_000_000

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Seconds = Annotated[int, msgspec.Meta(gt=0, le=int(MAX_SECONDS))]
Bytes = Annotated[int, msgspec.Meta(gt=0, le=MAX_BYTES)]
KafkaMs = Annotated[int, msgspec.Meta(gt=0, le=MAX_KAFKA_MS)]
# Paths may hold any bytes the OS allows (undecodable ones arrive as surrogates); every
# other text setting is sent or hashed as UTF-8 and so must encode.
PATH_FIELDS = frozenset({"data_dir", "schemas_dir", "config_file", "demo_bundle"})
_HOST = re.compile(r"[A-Za-z0-9._-]+")


class SettingsError(ValueError):
    """A setting is missing, malformed or contradicts another; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Processes sharing the port (SO_REUSEPORT). With the file sink each worker writes logs
    # of its own (worker i: partition i of each topic, see collector/sinks/file.py).
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Which sink takes accepted events; unset means kafka when bootstrap servers are set,
    # else the embedded file sink. `memory` is for tests (`capture serve` refuses it).
    sink: Literal["file", "kafka", "memory"] | None = None
    data_dir: str = "data"
    schemas_dir: str | None = None
    # TOML file with write keys ([[sources]]) and routing rules ([routing]); see config_file.py
    config_file: str | None = None
    # How far a signed request's X-Capture-Timestamp may be from the collector's clock.
    signature_tolerance_s: Seconds = 300
    kafka_bootstrap_servers: str | None = None
    kafka_client_id: str = "event-capture-collector"
    # aiokafka compresses on the event loop: zstd (via cramjam) costs ~1/10 of its gzip-9
    kafka_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = "zstd"
    # Batches already fill while the previous one is in flight; linger only adds delay.
    kafka_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_KAFKA_MS)] = 0
    kafka_request_timeout_ms: KafkaMs = 10_000
    topic_prefix: str = "events."
    # Topic per event, with {event} and {version}, e.g. `events.{event}.v{version}`; when set
    # it replaces topic_prefix (which means `<prefix>{event}`). A schema's x-topic still wins.
    topic_template: str | None = None
    dead_letter_topic: str = "events._invalid"
    # The deadline for the sink to acknowledge a request's events before the answer is 503.
    sink_timeout_s: PositiveFloat = 5.0
    retry_after_s: Seconds = 2
    # On SIGTERM the listener closes at once; requests in flight finish (each bounded by
    # sink_timeout_s), then the sink flushes: both within this (see collector/shutdown.py).
    shutdown_timeout_s: PositiveFloat = 15.0
    max_body_bytes: Bytes = 1_048_576
    # Request bytes being processed at once in this process; past it, 503 at once (no queue).
    max_inflight_bytes: Bytes = 67_108_864
    max_decompressed_bytes: Bytes = 8_388_608
    # The whole body must arrive within this; a slower client gets 408 and the connection
    # closes (aiohttp has no body timeout of its own).
    body_read_timeout_s: PositiveFloat = 10.0
    # One event's `properties` + `context` as sent, in bytes; larger: dead-lettered alone.
    max_event_bytes: Bytes = DEFAULT_MAX_EVENT_BYTES
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
    dedup_window_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)] = 0.0
    # At most this many remembered ids (the oldest are forgotten first): bounds the memory.
    dedup_max_ids: PositiveInt = 100_000
    # Events/s one key may send into one topic, per process, before its further events go to
    # `<topic>_overflow` (0: off, the default: consumers must read the overflow topics first).
    hot_key_rate_per_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_HOT_KEY_RATE_PER_S)] = 0.0
    # Events a key may send at once above that rate before it counts as hot.
    hot_key_burst: Annotated[int, msgspec.Meta(ge=1, le=MAX_HOT_KEY_BURST)] = 1000
    # (topic, key) pairs tracked at once (least recently seen forgotten first): bounds memory.
    hot_key_max_keys: Annotated[int, msgspec.Meta(ge=1, le=MAX_HOT_KEYS)] = 10_000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `json`: one JSON object per line (ts, level, logger, message, extra fields) for shippers
    log_format: Literal["text", "json"] = "text"
    # Serve the demo page of `make run` at /demo, with a browser key for this collector's own
    # origin (collector/demo.py). For trying the browser SDK locally; off in production.
    demo: bool = False
    # The browser SDK's script-tag build that /demo/capture.js serves (`npm run build` in sdk-js).
    demo_bundle: str = "sdk-js/dist/capture.iife.js"

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
    check_settings(settings)
    if settings.sink_kind == "kafka" and not settings.kafka_bootstrap_servers:
        raise SettingsError(
            f"{env_var('sink')}=kafka needs {env_var('kafka_bootstrap_servers')} (host:port,...)"
        )
    if settings.workers > 1 and settings.sink_kind == "memory":
        raise SettingsError(
            f"{env_var('workers')}={settings.workers} needs the kafka or file sink:"
            " the memory sink is owned by a single process"
        )
    return settings


def check_settings(settings: Settings) -> None:
    """The format of every text setting that has one; raises SettingsError naming it."""
    for field in FIELDS:
        value = getattr(settings, field)
        if field not in PATH_FIELDS and isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _invalid(field, "not valid UTF-8 text") from exc
    checks: dict[str, Callable[[], object]] = {
        "trusted_proxies": lambda: parse_networks(settings.trusted_proxies),
        "kafka_bootstrap_servers": lambda: parse_bootstrap_servers(
            settings.kafka_bootstrap_servers
        ),
    }
    for field, check in checks.items():
        try:
            check()
        except ValueError as exc:
            raise _invalid(field, str(exc)) from exc
    # The topic template is checked with the plan (collector.reload.build_plan): what it
    # yields depends on the events.
    problem = topic_prefix_error(settings.topic_prefix)
    if problem is not None:
        raise _invalid("topic_prefix", problem)
    problem = topic_error(settings.dead_letter_topic)
    if problem is not None:
        raise _invalid("dead_letter_topic", problem)


def parse_bootstrap_servers(text: str | None) -> list[tuple[str, int]]:
    """`host[:port],...` (IPv6 in brackets) as Kafka clients read it; port 9092 by default.

    aiokafka parses this itself only once the producer starts, and a bad entry then raises
    from inside the sink (or, for an empty host, is retried forever).
    """
    if text is None:
        return []
    servers = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            raise ValueError(f"`{text}` has an empty entry (a comma too many)")
        host, port = entry, "9092"
        if entry.startswith("["):
            host, closed, rest = entry[1:].partition("]")
            if not closed:  # aiokafka would raise on it only once the producer starts
                raise ValueError(f"`{entry}` has no closing `]`")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"`{entry}` is not host:port")
                port = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError as exc:
                raise ValueError(f"`[{host}]` is not an IPv6 address") from exc
        elif ":" in entry and _is_ipv6(entry):
            pass  # a bare IPv6 address, default port (as aiokafka reads it)
        elif ":" in entry:
            host, _, port = entry.rpartition(":")
            if not _HOST.fullmatch(host):
                raise ValueError(
                    f"`{entry}` is not host:port (an IPv6 address goes in brackets: [::1]:9092)"
                )
        elif not _HOST.fullmatch(host):
            raise ValueError(f"`{entry}` is not host:port")
        if not port.isascii() or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"`{entry}`: the port must be a number from 1 to 65535")
        servers.append((host, int(port)))
    return servers


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _invalid(field: str, problem: str) -> SettingsError:
    return SettingsError(f"invalid setting {env_var(field)} (--{_flag(field)}): {problem}")


def _flag(field: str) -> str:
    return field.replace("_", "-")
