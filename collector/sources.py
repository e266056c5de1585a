"""Write keys: the `[[sources]]` entries of the config file, checked and indexed for lookup.

Each source names its keys, the events they may send, and whether they are public browser keys
(with a CORS origin allowlist) or secret server keys (optionally with HMAC signing secrets).
This module only converts and validates configuration; it never sees a request, and no error
it raises ever contains a key or a secret (they name the file, the entry and the field).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from collector.settings import SettingsError
from event_schemas.errors import split_validation_error

# Short keys can be guessed; 16 characters of a random token is the least we accept.
MIN_KEY_CHARS = 16
# The current secret and the next one, accepted side by side while senders switch over.
MAX_SIGNING_SECRETS = 2

SourceName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
StrOrList = str | list[str]


class SourceEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One `[[sources]]` table as written in the file."""

    name: SourceName
    kind: Literal["browser", "server"]
    events: StrOrList
    key: StrOrList = []
    keys: list[str] = []
    # names of environment variables holding keys, so that secrets need not sit in the file
    key_env: StrOrList = []
    allowed_origins: list[str] = []
    signing_secrets: list[str] = []
    signing_secrets_env: StrOrList = []
    rate_limit_per_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    burst: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """A checked source. `events` is None when it may send every event of the plan."""

    name: str
    kind: Literal["browser", "server"]
    events: frozenset[str] | None
    allowed_origins: frozenset[str]
    signing_secrets: tuple[bytes, ...]
    # requests per second and bucket size, per key; None: not limited
    rate_limit_per_s: float | None
    burst: int

    @property
    def is_browser(self) -> bool:
        return self.kind == "browser"


class KeyEntry(msgspec.Struct, frozen=True):
    """One write key: its source and its position there (how logs and errors name it)."""

    source: Source
    index: int

    @property
    def label(self) -> str:
        return f"{self.source.name}[{self.index}]"


class Sources:
    """Every configured write key, indexed by the SHA-256 digest of the key.

    Looking a key up by its digest keeps the comparison constant-time however many keys there
    are: what the dict lookup's timing could reveal is the digest, which an attacker cannot
    steer towards a real key.
    """

    def __init__(
        self,
        sources: tuple[Source, ...],
        by_digest: dict[bytes, KeyEntry],
        *,
        open_mode: bool | None = None,
    ) -> None:
        self.sources = sources
        self.by_digest = by_digest
        # a preflight carries no key, so any origin some browser source lists is let in
        self.browser_origins = frozenset(
            origin for source in sources for origin in source.allowed_origins
        )
        # default: open when nothing is configured; a key the collector provisions itself
        # (the demo page's, collector/demo.py) does not end development mode
        self._open = not sources if open_mode is None else open_mode

    @property
    def open(self) -> bool:
        """No sources configured: development mode, every request is let in without a key
        (a key that is known all the same is still checked: see `auth.admit`)."""
        return self._open


def key_digest(key: str | bytes) -> bytes:
    """SHA-256 of the key's UTF-8 bytes; a presented key is hashed as the bytes sent."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def build_sources(
    config: Mapping[str, Any], *, path: str | None, environ: Mapping[str, str]
) -> Sources:
    """The `sources` table of a loaded config file (see `config_file.load_config_file`)."""
    raw = config.get("sources", [])
    where = f"config file {path}"
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise SettingsError(f"{where}: `sources` must be an array of tables ([[sources]])")
    sources: list[Source] = []
    by_digest: dict[bytes, KeyEntry] = {}
    for position, item in enumerate(raw):
        label = f"{where}: sources[{position}]"
        if isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        try:
            entry = msgspec.convert(item, SourceEntry)
        except msgspec.ValidationError as exc:
            field, message = split_validation_error(exc)
            raise SettingsError(f"{label}: {field.removeprefix('$.')}: {message}") from exc
        source, keys = _check(entry, label, environ)
        if any(other.name == source.name for other in sources):
            raise SettingsError(f"{label}: another source is already named {source.name!r}")
        for index, key in enumerate(keys):
            digest = key_digest(key)
            if digest in by_digest:
                other = by_digest[digest].label
                raise SettingsError(f"{label}: key {index} is the same as key {other}")
            by_digest[digest] = KeyEntry(source, index)
        sources.append(source)
    return Sources(tuple(sources), by_digest)


def _check(entry: SourceEntry, label: str, environ: Mapping[str, str]) -> tuple[Source, list[str]]:
    keys = _as_list(entry.key) + entry.keys + _from_env(entry.key_env, label, "key_env", environ)
    if not keys:
        raise SettingsError(f"{label}: no key (set `keys`, `key` or `key_env`)")
    for index, key in enumerate(keys):
        if len(key) < MIN_KEY_CHARS or key != key.strip():
            raise SettingsError(
                f"{label}: key {index} must be at least {MIN_KEY_CHARS} characters,"
                " without surrounding spaces"
            )
    secrets = entry.signing_secrets + _from_env(
        entry.signing_secrets_env, label, "signing_secrets_env", environ
    )
    origins = frozenset(_check_origin(origin, label) for origin in entry.allowed_origins)
    if entry.kind == "browser":
        if not origins:
            raise SettingsError(f"{label}: a browser source needs `allowed_origins`")
        if secrets:
            raise SettingsError(
                f"{label}: a browser key is public, it cannot sign requests;"
                " drop `signing_secrets` or make it a server source"
            )
    elif origins:
        raise SettingsError(
            f"{label}: `allowed_origins` is for browser sources; a server key must not be"
            " used from a browser"
        )
    if len(secrets) > MAX_SIGNING_SECRETS:
        raise SettingsError(
            f"{label}: at most {MAX_SIGNING_SECRETS} signing secrets (the current and the next)"
        )
    if any(len(secret) < MIN_KEY_CHARS for secret in secrets):
        raise SettingsError(f"{label}: signing secrets must be at least {MIN_KEY_CHARS} characters")
    if entry.burst is not None and entry.rate_limit_per_s is None:
        raise SettingsError(f"{label}: `burst` needs `rate_limit_per_s`")
    rate = entry.rate_limit_per_s
    burst = entry.burst if entry.burst is not None else max(1, math.ceil(rate or 1))
    source = Source(
        name=entry.name,
        kind=entry.kind,
        events=_check_events(entry.events, label),
        allowed_origins=origins,
        signing_secrets=tuple(secret.encode() for secret in secrets),
        rate_limit_per_s=rate,
        burst=burst,
    )
    return source, keys


def _check_events(events: StrOrList, label: str) -> frozenset[str] | None:
    if events == "*":
        return None
    names = _as_list(events)
    if not names or any(not name or name == "*" for name in names):
        raise SettingsError(
            f'{label}: `events` must be "*" or a non-empty list of event names'
            ' (like ["track_played"])'
        )
    return frozenset(names)


def _check_origin(origin: str, label: str) -> str:
    """`scheme://host[:port]` exactly as a browser sends it in the Origin header."""
    parts = urlsplit(origin)
    well_formed = (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not (parts.path or parts.query or parts.fragment)
        and "@" not in parts.netloc
        and "*" not in parts.netloc
    )
    if not well_formed:
        raise SettingsError(
            f"{label}: allowed origin {origin!r} must look like https://app.example.com"
            " (scheme, host, optional port; no path, no trailing slash, no wildcard)"
        )
    return origin.lower()


def _from_env(names: StrOrList, label: str, field: str, environ: Mapping[str, str]) -> list[str]:
    values = []
    for name in _as_list(names):
        value = environ.get(name, "")
        if not value:
            raise SettingsError(f"{label}: {field}: environment variable {name} is not set")
        values.append(value)
    return values


def _as_list(value: StrOrList) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
