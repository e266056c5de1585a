"""docker-compose.yml, the Dockerfile and deploy/ agree with the collector and each other.

Docker does not run here: these tests only parse the files, so that a renamed setting, a moved
port or a changed listener breaks the build instead of the first `docker compose up`.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.cli import build_parser
from collector.metrics import PRODUCER_RESTART_REASONS, SINK_ERROR_TYPES, Metrics
from collector.settings import FIELDS, env_var, load_settings
from collector.sinks.kafka_batches import sender_failure
from tests.conftest import HttpClient
from tests.factories import batch_body, track_played

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
JSON_HEADERS = {"Content-Type": "application/json"}
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


# --- Prometheus and Grafana (deploy/) -------------------------------------------------------

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "collector.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
METRIC_RE = re.compile(r"\b(capture_[a-z0-9_]+)")
RESTARTS = "capture_kafka_producer_restarts_total"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (short syntax)."""
    found = {}
    for entry in svc.get("volumes", []):
        host, container = str(entry).split(":")[:2]
        assert host.startswith("./"), f"{entry}: bind-mount files from the repository"
        found[container] = ROOT / host
    return found


def in_container(svc: dict[str, Any], path: str) -> Path:
    """The repository file a container path of `svc` is mounted from."""
    for container, host in mounts(svc).items():
        if path == container or path.startswith(container.rstrip("/") + "/"):
            return host / path[len(container) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted into the container")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_prometheus_is_provisioned_from_the_repository(compose: dict[str, Any]) -> None:
    prometheus = service(compose, "prometheus")
    flags = dict(arg.split("=", 1) for arg in prometheus["command"])
    config_file = in_container(prometheus, flags["--config.file"])
    assert config_file.is_file(), config_file
    config = load_yaml(config_file)
    rule_files = [in_container(prometheus, path) for path in config["rule_files"]]
    assert rule_files == [ALERTS]
    [job] = config["scrape_configs"]
    port = environment(service(compose, "collector"))["CAPTURE_PORT"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"collector:{port}"]
    # the alert on a dead collector names this job
    assert any(f'job="{job["job_name"]}"' in rule["expr"] for rule in alert_rules())
    assert "9090" in container_ports(prometheus)


def test_grafana_is_provisioned_with_the_datasource_and_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = service(compose, "grafana")
    provisioning = in_container(grafana, "/etc/grafana/provisioning")
    [source] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert urlsplit(source["url"]).netloc == "prometheus:9090"
    [provider] = load_yaml(provisioning / "dashboards" / "collector.yml")["providers"]
    dashboards = in_container(grafana, provider["options"]["path"])
    assert dashboards / "collector.json" == DASHBOARD
    panels = json.loads(DASHBOARD.read_text())["panels"]
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(target["datasource"]["uid"] == source["uid"] for target in panel["targets"])
    assert "3000" in container_ports(grafana)


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "CaptureCollectorDown",
        "CaptureHigh5xxRatio",
        "CaptureSinkNotReady",
        "CaptureHighP99Latency",
        "CaptureProducerRestarts",
        "CaptureHighRejectionRatio",
    } <= names
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


async def test_dashboard_and_alerts_use_only_metrics_the_collector_exposes(
    collector: HttpClient,
) -> None:
    await collector.post("/v1/batch", data=batch_body(track_played()), headers=JSON_HEADERS)
    text = await (await collector.get("/metrics")).text()
    exposed = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    used: dict[str, str] = {}
    for where, expr in [("dashboard", e) for e in dashboard_exprs()] + [
        (f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()
    ]:
        for name in METRIC_RE.findall(expr):
            used.setdefault(name, where)
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert missing == {}, "not in a real /metrics scrape"
    # the dashboard shows every signal the issue lists
    assert {
        "capture_http_requests_total",
        "capture_http_request_duration_seconds_bucket",
        "capture_events_total",
        "capture_events_rejected_total",
        "capture_inflight_bytes",
        "capture_sink_publish_duration_seconds_bucket",
        "capture_sink_errors_total",
        "capture_kafka_producer_restarts_total",
        "capture_dedup_hits_total",
        "capture_sink_ready",
        "capture_http_request_body_bytes_bucket",
        "capture_batch_events_bucket",
    } <= {name for expr in dashboard_exprs() for name in METRIC_RE.findall(expr)}


async def test_sink_counters_are_exported_at_zero_before_anything_happened(
    collector: HttpClient,
) -> None:
    # A counter series born at 1 gives rate()/increase() no earlier sample: the dashboard and
    # the CaptureProducerRestarts alert would miss each process's first error/restart (#15).
    text = await (await collector.get("/metrics")).text()
    samples = {
        (found.name, tuple(sorted(found.labels.items()))): found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
    }
    for error_type in SINK_ERROR_TYPES:
        labels = (("sink", "memory"), ("type", error_type))
        assert samples[("capture_sink_errors_total", labels)] == 0
    # only a Kafka sink has a producer to restart
    assert not any(name == "capture_kafka_producer_restarts_total" for name, _ in samples)


def test_a_kafka_collector_exports_every_producer_restart_reason_at_zero() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.count_sink_from_zero("kafka")
    for reason in PRODUCER_RESTART_REASONS:
        labels = {"reason": reason}
        assert metrics.registry.get_sample_value(RESTARTS, labels) == 0, reason
    # the reasons are the ones the sink reports (a new one must be added to the list)
    reported = set(re.findall(r'return "([a-z_]+)"', inspect.getsource(sender_failure)))
    assert reported == set(PRODUCER_RESTART_REASONS)
