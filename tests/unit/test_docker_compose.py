"""docker-compose.yml and the Dockerfile agree with the collector's settings and each other.

Docker does not run here: these tests only parse the files, so that a renamed setting, a moved
port or a changed listener breaks the build instead of the first `docker compose up`.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from collector.cli import build_parser
from collector.settings import FIELDS, env_var, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LISTENER_RE = re.compile(r"^(?P<name>[A-Z_]+)://(?P<host>[^:/]*):(?P<port>\d+)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose["services"]
    assert name in services, f"docker-compose.yml has no `{name}` service"
    result: dict[str, Any] = services[name]
    return result


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose passes it: both the mapping and the list syntax."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env: dict[str, str] = {}
    for key, value in raw.items():
        # YAML turns bare yes/no/true into booleans, and a key without a value is taken from
        # the host's environment: neither belongs in a checked-in configuration.
        assert not isinstance(value, bool), (key, value)
        assert isinstance(value, str | int), (key, value)
        env[key] = str(value)
    return env


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def dockerfile_values(instruction: str) -> list[str]:
    return [args for name, args in dockerfile() if name == instruction]


def command_words(args: str) -> list[str]:
    """The words of a CMD/ENTRYPOINT in exec (JSON array) or shell form."""
    if args.startswith("["):
        words = json.loads(args)
        assert isinstance(words, list)
        return [str(word) for word in words]
    return shlex.split(args)


def dockerfile_capture_env() -> dict[str, str]:
    """The image's own CAPTURE_* defaults (ENV KEY=VALUE ...)."""
    env: dict[str, str] = {}
    for args in dockerfile_values("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            if key.startswith("CAPTURE_"):
                env[key] = value
    return env


def listeners(value: str) -> list[dict[str, str]]:
    found = []
    for entry in value.split(","):
        match = LISTENER_RE.match(entry.strip())
        assert match is not None, f"cannot parse listener {entry!r}"
        found.append(match.groupdict())
    return found


def test_collector_is_configured_only_by_real_settings(compose: dict[str, Any]) -> None:
    env = environment(service(compose, "collector"))
    known = {env_var(field) for field in FIELDS}
    assert env, "the collector service sets no CAPTURE_* variables"
    assert [key for key in env if not key.startswith("CAPTURE_")] == []
    assert sorted(set(env) - known) == [], "not collector settings"
    assert sorted(set(dockerfile_capture_env()) - known) == [], (
        "Dockerfile ENV: not collector settings"
    )


def test_collector_environment_loads_and_selects_the_kafka_sink(compose: dict[str, Any]) -> None:
    env = environment(service(compose, "collector"))
    # The image's ENV is the base; compose's environment overrides it.
    settings = load_settings({**dockerfile_capture_env(), **env})
    assert settings.sink == "kafka"
    assert settings.sink_kind == "kafka"
    assert settings.host == "0.0.0.0"
    assert settings.kafka_bootstrap_servers == env["CAPTURE_KAFKA_BOOTSTRAP_SERVERS"]


def test_bootstrap_servers_are_the_kafka_service_and_an_advertised_port(
    compose: dict[str, Any],
) -> None:
    bootstrap = environment(service(compose, "collector"))["CAPTURE_KAFKA_BOOTSTRAP_SERVERS"]
    kafka = environment(service(compose, "kafka"))
    controllers = set(kafka["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    bound = {item["name"]: item["port"] for item in listeners(kafka["KAFKA_LISTENERS"])}
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        assert host == "kafka", f"{server}: the broker is reached by its compose service name"
        matches = [item for item in advertised if (item["host"], item["port"]) == (host, port)]
        assert matches, f"{server} is not among the advertised listeners {advertised}"
        for item in matches:
            assert item["name"] not in controllers, f"{server} is a controller listener"
            assert bound.get(item["name"]) == port, f"the broker does not listen on {server}"


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = service(compose, "kafka")
    env = environment(kafka)
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert env["KAFKA_NODE_ID"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller_port = {item["name"]: item["port"] for item in listeners(env["KAFKA_LISTENERS"])}[
        env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    ]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@kafka:{controller_port}"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "true"
    factors = {key: value for key, value in env.items() if key.endswith("REPLICATION_FACTOR")}
    assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in factors
    assert set(factors.values()) == {"1"}
    assert kafka["healthcheck"]["test"]


def container_ports(svc: dict[str, Any]) -> set[str]:
    """Container-side ports of `ports` (short "[ip:]host:container[/proto]" or long syntax)."""
    ports = set()
    for entry in svc.get("ports", []):
        target = entry["target"] if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        ports.add(str(target).split("/", 1)[0])
    return ports


def test_collector_port_is_published_exposed_and_health_checked(compose: dict[str, Any]) -> None:
    collector = service(compose, "collector")
    port = environment(collector)["CAPTURE_PORT"]
    assert port in container_ports(collector)
    exposed = {word.split("/")[0] for args in dockerfile_values("EXPOSE") for word in args.split()}
    assert port in exposed, "the Dockerfile does not EXPOSE the collector's port"
    assert {str(p) for p in collector.get("expose", [port])} == {port}

    words = [str(word) for word in collector["healthcheck"]["test"]]
    assert words[:2] == ["CMD", "python"], "slim images have no curl: check health with python"
    urls = re.findall(r"https?://[^\s'\"]+", " ".join(words))
    assert len(urls) == 1, urls
    url = urlsplit(urls[0])
    assert (url.hostname, str(url.port), url.path) == ("127.0.0.1", port, "/healthz")
    assert collector["depends_on"]["kafka"] == {"condition": "service_healthy"}


def test_dockerfile_builds_the_package_and_runs_capture_serve(compose: dict[str, Any]) -> None:
    assert dockerfile_values("FROM") == ["python:3.11-slim"]
    assert any("pip install ." in args for args in dockerfile_values("RUN"))
    collector = service(compose, "collector")
    assert collector["build"] in (".", {"context": "."})
    # compose would replace the image's command; this one must not.
    assert "command" not in collector
    assert "entrypoint" not in collector
    entrypoint = [command_words(a) for a in dockerfile_values("ENTRYPOINT")][-1:] or [[]]
    cmd = [command_words(a) for a in dockerfile_values("CMD")][-1]
    command = entrypoint[0] + cmd
    assert command[:2] == ["capture", "serve"]
    # ... and `capture` is the console script that `pip install .` puts on PATH.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["capture"] == "collector.cli:main"
    assert build_parser().parse_args(command[1:]).command == "serve"


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", ".mypy_cache", ".pytest_cache", ".ruff_cache"} <= entries
