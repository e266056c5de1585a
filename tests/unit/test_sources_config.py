"""The `[[sources]]` config: what is accepted, and errors that name the file and the entry."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from collector.config_file import load_config_file
from collector.settings import SettingsError
from collector.sources import build_sources, key_digest

KEY = "sk_server_0123456789abcdef"
EXAMPLE = Path(__file__).parents[2] / "examples" / "collector.toml"


def build(toml: str, environ: dict[str, str] | None = None) -> object:
    return build_sources(tomllib.loads(toml), path="keys.toml", environ=environ or {})


def server(**fields: str) -> str:
    lines = {"name": '"api"', "kind": '"server"', "key": f'"{KEY}"', "events": '"*"'} | fields
    return "[[sources]]\n" + "\n".join(f"{k} = {v}" for k, v in lines.items() if v) + "\n"


def test_no_sources_is_open_mode() -> None:
    sources = build_sources({}, path=None, environ={})
    assert sources.open
    assert sources.by_digest == {}


def test_keys_from_the_file_and_the_environment_name_their_source() -> None:
    toml = server(keys=f'["{KEY[::-1]}"]', key_env='["API_KEY"]', events='["track_played"]')
    sources = build_sources(
        tomllib.loads(toml), path="keys.toml", environ={"API_KEY": "sk_env_0123456789abcdef"}
    )
    assert not sources.open
    labels = {entry.label for entry in sources.by_digest.values()}
    assert labels == {"api[0]", "api[1]", "api[2]"}
    entry = sources.by_digest[key_digest("sk_env_0123456789abcdef")]
    assert entry.source.events == frozenset({"track_played"})
    assert entry.source.rate_limit_per_s is None


def test_burst_defaults_to_one_second_of_rate() -> None:
    sources = build_sources(
        tomllib.loads(server(rate_limit_per_s="20")), path="keys.toml", environ={}
    )
    assert sources.sources[0].burst == 20


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (server(key='"short"'), "at least 16 characters"),
        (server(key='""', keys="[]"), "key 0 must be"),
        (server(key=""), "no key"),
        (server(kind='"robot"'), "kind"),
        (server(events="[]"), "`events`"),
        (server(events='["*"]'), "`events`"),
        (server(colour='"red"'), "colour"),
        (server(allowed_origins='["https://a.example.com"]'), "browser sources"),
        (server(key_env='"MISSING"'), "MISSING is not set"),
        (server(burst="5"), "needs `rate_limit_per_s`"),
        (server(rate_limit_per_s="0"), "rate_limit_per_s"),
        (
            server(
                signing_secrets='["s1_0123456789abcdef", "s2_0123456789abcdef", "s3_0123456789"]'
            ),
            "at most 2",
        ),
        (server(signing_secrets='["short"]'), "signing secrets must be"),
        (server(name='"_unknown"'), "name"),
        (server() + server(key='"sk_other_0123456789abcdef"'), "already named 'api'"),
        (server() + server(name='"other"'), "key 0 is the same as key api[0]"),
        (
            server(
                kind='"browser"',
                allowed_origins='["https://a.example.com"]',
                signing_secrets='["s1_0123456789abcdef"]',
            ),
            "cannot sign",
        ),
        (server(kind='"browser"'), "needs `allowed_origins`"),
        (server(kind='"browser"', allowed_origins='["https://a.example.com/"]'), "no path"),
        (server(kind='"browser"', allowed_origins='["*"]'), "no wildcard"),
        (server(kind='"browser"', allowed_origins='["https://*.example.com"]'), "no wildcard"),
        ("sources = 3\n", "array of tables"),
    ],
)
def test_bad_entry_is_refused_naming_file_and_entry(toml: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        build(toml)
    text = str(caught.value)
    assert message in text
    assert "keys.toml" in text
    if "[[sources]]" in toml:
        assert "sources[" in text
    assert KEY not in text  # a key never appears in an error


def test_example_config_file_loads() -> None:
    config = load_config_file(str(EXAMPLE))
    sources = build_sources(
        config,
        path=str(EXAMPLE),
        environ={
            "BILLING_WRITE_KEY": "sk_billing_0123456789abcdef",
            "BILLING_SIGNING_SECRET": "whsec_0123456789abcdef",
        },
    )
    kinds = {source.name: source.kind for source in sources.sources}
    assert "browser" in kinds.values()
    assert "server" in kinds.values()
    assert sources.browser_origins
