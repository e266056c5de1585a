"""docker-compose.yml, the Dockerfile and deploy/ agree with the collector and each other.

Docker does not run here: these tests only parse the files, so that a renamed setting, a moved
port or a changed listener breaks the build instead of the first `docker compose up`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
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
from devtools import kafka_cluster
from devtools.haproxy import haproxy_binary
from devtools.kafka import KAFKA_VERSION
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


def collector_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every service that runs the collector image, whatever its profile."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or svc.get("image") == service(compose, "collector")["image"]
    }


def test_collector_is_configured_only_by_real_settings(compose: dict[str, Any]) -> None:
    known = {env_var(field) for field in FIELDS}
    collectors = collector_services(compose)
    assert {"collector", "collector-1", "collector-2"} <= set(collectors)
    for name, svc in collectors.items():
        env = environment(svc)
        assert env, f"{name} sets no CAPTURE_* variables"
        assert [key for key in env if not key.startswith("CAPTURE_")] == [], name
        assert sorted(set(env) - known) == [], f"{name}: not collector settings"
        # the image's ENV is the base; compose's environment overrides it
        settings = load_settings({**dockerfile_capture_env(), **env})
        assert (settings.sink, settings.sink_kind, settings.host) == ("kafka", "kafka", "0.0.0.0")
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


def assert_bootstrap_reaches(compose: dict[str, Any], bootstrap: str, brokers: list[str]) -> None:
    """`bootstrap` names each of the `brokers` services once, on a port it advertises and
    listens on for clients (not its controller listener)."""
    hosts = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        assert host in brokers, f"{server}: a broker is reached by its compose service name"
        hosts.append(host)
        kafka = environment(service(compose, host))
        controllers = set(kafka["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
        advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
        bound = {item["name"]: item["port"] for item in listeners(kafka["KAFKA_LISTENERS"])}
        matches = [item for item in advertised if (item["host"], item["port"]) == (host, port)]
        assert matches, f"{server} is not among the advertised listeners {advertised}"
        for item in matches:
            assert item["name"] not in controllers, f"{server} is a controller listener"
            assert bound.get(item["name"]) == port, f"the broker does not listen on {server}"
    assert sorted(hosts) == sorted(brokers), f"{bootstrap} does not list every broker once"


def test_bootstrap_servers_are_the_kafka_service_and_an_advertised_port(
    compose: dict[str, Any],
) -> None:
    bootstrap = environment(service(compose, "collector"))["CAPTURE_KAFKA_BOOTSTRAP_SERVERS"]
    assert_bootstrap_reaches(compose, bootstrap, ["kafka"])


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = service(compose, "kafka")
    env = environment(kafka)
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}", "not the harness's Kafka"
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


# --- profile `cluster`: a controller, three brokers, two collectors, HAProxy -----------------

CLUSTER = "cluster"
HAPROXY_DIR = DEPLOY / "haproxy"
SECTION_RE = re.compile(
    r"^(global|defaults|frontend|backend|listen|resolvers|peers|userlist|cache|program"
    r"|http-errors|ring|mailers)\b[ \t]*(\S*)",
    re.M,
)
# Broker settings that decide durability and placement: the compose cluster must use the
# values the fault scenarios were run with (devtools/kafka_cluster.py).
DURABILITY_PROPERTIES = (
    "min.insync.replicas",
    "default.replication.factor",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "unclean.leader.election.enable",
    "auto.create.topics.enable",
    "num.partitions",
)


def kafka_env_name(prop: str) -> str:
    """The apache/kafka image's variable for a server property: `.` is `_`, `_` is `__`."""
    return "KAFKA_" + prop.replace("_", "__").replace(".", "_").upper()


def in_profile(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if profile in s.get("profiles", [])}


def cluster_kafka(compose: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in in_profile(compose, CLUSTER).items()
        if environment(svc).get("KAFKA_PROCESS_ROLES") == role
    }


class RecordedProcess:
    """Stands in for a Kafka JVM: keeps the properties the harness would start it with."""

    def __init__(self, work_dir: Path, properties: dict[str, str], **_: object) -> None:
        self.properties = dict(properties)


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> kafka_cluster.KafkaCluster:
    """The fault scenarios' cluster as configured, without fetching or starting Kafka."""
    monkeypatch.setattr(kafka_cluster, "KafkaProcess", RecordedProcess)
    return kafka_cluster.KafkaCluster(3, proxies=False, work_dir=tmp_path)


def test_cluster_is_three_brokers_and_a_dedicated_controller(compose: dict[str, Any]) -> None:
    brokers, controllers = cluster_kafka(compose, "broker"), cluster_kafka(compose, "controller")
    assert len(brokers) == 3
    assert len(controllers) == 1
    nodes = {**brokers, **controllers}
    for name, svc in nodes.items():
        assert svc["image"] == f"apache/kafka:{KAFKA_VERSION}", f"{name}: not the harness's Kafka"
    envs = {name: environment(svc) for name, svc in nodes.items()}
    assert len({env["KAFKA_NODE_ID"] for env in envs.values()}) == len(nodes), "node ids repeat"
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    [(controller, controller_env)] = [(n, envs[n]) for n in controllers]
    port = {i["name"]: i["port"] for i in listeners(controller_env["KAFKA_LISTENERS"])}[
        controller_env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    ]
    voters = f"{controller_env['KAFKA_NODE_ID']}@{controller}:{port}"
    assert {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()} == {voters}
    for name in brokers:
        assert brokers[name]["depends_on"][controller] == {"condition": "service_healthy"}
        assert brokers[name]["healthcheck"]["test"], name
        assert_bootstrap_reaches(compose, f"{name}:9092", [name])
    assert controllers[controller]["healthcheck"]["test"]
    # each node keeps its log in a volume of its own
    data = [str(v).split(":")[0] for svc in nodes.values() for v in svc["volumes"]]
    assert len(set(data)) == len(nodes)
    assert set(data) <= set(compose["volumes"])


def test_cluster_durability_settings_are_the_harness(
    compose: dict[str, Any], harness: kafka_cluster.KafkaCluster
) -> None:
    [controller] = cluster_kafka(compose, "controller").values()
    brokers = cluster_kafka(compose, "broker").values()
    # the controller's min.insync.replicas is the cluster's default (docs/reliability.md)
    assert environment(controller)["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert environment(controller)["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
    pairs = [(controller, harness.controllers[0].properties)] + [
        (svc, node.process.properties) for svc, node in zip(brokers, harness.nodes, strict=True)
    ]
    for svc, properties in pairs:
        env = environment(svc)
        for prop in DURABILITY_PROPERTIES:
            if prop in properties:
                assert env.get(kafka_env_name(prop)) == properties[prop], (svc["hostname"], prop)
    for svc in brokers:
        env = environment(svc)
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        factors = {key: value for key, value in env.items() if key.endswith("REPLICATION_FACTOR")}
        assert set(factors.values()) == {"3"}, factors
        assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in factors


def test_cluster_collectors_reach_all_three_brokers(compose: dict[str, Any]) -> None:
    brokers = sorted(cluster_kafka(compose, "broker"))
    collectors = {
        n: s for n, s in collector_services(compose).items() if n in in_profile(compose, CLUSTER)
    }
    assert len(collectors) == 2
    for name, svc in collectors.items():
        env = environment(svc)
        assert_bootstrap_reaches(compose, env["CAPTURE_KAFKA_BOOTSTRAP_SERVERS"], brokers)
        assert svc["depends_on"] == {b: {"condition": "service_healthy"} for b in brokers}, name
        assert svc["build"] == "."
        assert "ports" not in svc, f"{name}: clients reach the collectors through HAProxy only"
        [url] = re.findall(r"https?://[^\s'\"]+", " ".join(svc["healthcheck"]["test"]))
        assert urlsplit(url).port == int(env["CAPTURE_PORT"]), f"{name} checks another port"


def haproxy_script(haproxy: dict[str, Any]) -> list[list[str]]:
    """The steps of the haproxy service's `sh -c` command."""
    shell, flag, script = haproxy["command"]
    assert (shell, flag) == ("sh", "-c")
    return [shlex.split(step) for step in script.split("&&")]


def server_lines(config: str) -> list[list[str]]:
    return [line.split() for line in config.splitlines() if line.split()[:1] == ["server"]]


def test_haproxy_runs_the_shipped_config_with_a_server_per_collector(
    compose: dict[str, Any],
) -> None:
    haproxy = service(compose, "haproxy")
    assert CLUSTER in haproxy["profiles"]
    [mount] = [c for c, host in mounts(haproxy).items() if host.resolve() == HAPROXY_DIR]
    [remove, copy, append, run] = haproxy_script(haproxy)
    work = copy[-1]
    assert remove == ["rm", "-rf", work], "a restarted container must not append twice"
    assert copy == ["cp", "-R", mount, work], "the copy keeps errors/ beside the config"
    assert append == ["cat", f"{work}/compose-servers.cfg", ">>", f"{work}/haproxy.cfg"]
    assert run[:2] == ["exec", "haproxy"]
    assert run[run.index("-f") + 1 :] == [f"{work}/haproxy.cfg"]
    # the fragment adds servers only; every other setting stays in the shipped file
    fragment = (HAPROXY_DIR / "compose-servers.cfg").read_text()
    servers = server_lines(fragment)
    collectors = {
        n: s for n, s in collector_services(compose).items() if n in in_profile(compose, CLUSTER)
    }
    expected = {f"{name}:{environment(svc)['CAPTURE_PORT']}" for name, svc in collectors.items()}
    assert {words[2] for words in servers} == expected
    assert all("no-check" not in words for words in servers)
    assert haproxy["depends_on"] == {n: {"condition": "service_healthy"} for n in collectors}
    # HAProxy's checks poll /readyz (haproxy.cfg's backend, which the fragment ends up in)
    shipped = (HAPROXY_DIR / "haproxy.cfg").read_text()
    # appended lines belong to the last section: it must be the backend the frontend uses
    sections = SECTION_RE.findall(shipped)
    assert sections[-1] == ("backend", "collectors"), sections
    assert re.search(r"^\s*default_backend collectors\s*$", shipped, re.M)
    backend = shipped.split("\nbackend ")[-1]
    assert "option httpchk GET /readyz" in backend
    assert re.search(r"^\s*default-server check\b", backend, re.M), "servers are not checked"
    bind = environment(haproxy)["CAPTURE_LB_BIND"]
    assert bind.rpartition(":")[2] in container_ports(haproxy)


def test_haproxy_accepts_the_config_the_compose_service_builds(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Debian's HAProxy 2.6 (scripts/ops-deps.sh) parses what the container runs: the shipped
    config with compose-servers.cfg appended, as the service's command builds it."""
    binary = haproxy_binary()
    assert binary is not None, "`haproxy` is not installed; run scripts/ops-deps.sh"
    haproxy = service(compose, "haproxy")
    work = tmp_path / "haproxy"
    shutil.copytree(HAPROXY_DIR, work)
    with (work / "haproxy.cfg").open("a") as config:
        config.write((work / "compose-servers.cfg").read_text())
    env = {**os.environ, **environment(haproxy)}
    done = subprocess.run(
        [binary, "-c", "-f", str(work / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def host_ports(svc: dict[str, Any]) -> list[str]:
    """Host-side ports of `ports` ("[ip:]host:container[/proto]" or long syntax)."""
    found = []
    for entry in svc.get("ports", []):
        if isinstance(entry, dict):
            found.append(str(entry["published"]))
        else:
            parts = str(entry).split(":")
            assert len(parts) >= 2, f"{entry}: publish on a fixed host port"
            found.append(parts[-2])
    return found


def test_published_ports_do_not_collide(compose: dict[str, Any]) -> None:
    # `--profile cluster up` starts the default services too: all must fit on one host
    published = [port for svc in compose["services"].values() for port in host_ports(svc)]
    assert published, "nothing is published"
    assert sorted(published) == sorted(set(published)), "two services publish one host port"
    assert host_ports(service(compose, "haproxy")) == ["8000"]
