"""Every query of the Grafana dashboard, and every alert, on a real Prometheus (issue 15).

A real Prometheus scrapes a real collector (one process, then `--workers 2`, on the real
broker) while traffic flows; each panel query must then return series with a value. It never
exempts a panel: a panel with nothing to show gets traffic that makes it show something.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools.kafka import KafkaBroker
from devtools.ports import free_port
from devtools.prometheus import ALERTS, PrometheusServer, PromQLError
from tests.factories import batch_body, track_played
from tests.waiting import wait_ready

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "collector.json"
DEPLOY_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
CAPTURE = Path(sys.executable).with_name("capture")
KEY = "server-key-0123456789"
CONFIG = f"""
[[sources]]
name = "backend"
kind = "server"
keys = ["{KEY}"]
events = "*"
"""
# What Grafana would put in for its variables at a 1 s scrape interval. A variable missing
# here fails the test, so a new one gets a value rather than a broken query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}
# Panels that read 0 on a healthy collector; every other panel must show its traffic as a
# number above 0 (a label-less counter or gauge has a series even when nothing happened).
ZERO_WHEN_HEALTHY = {"Sink errors by type", "Kafka producer restarts", "Bytes in flight"}
# Scrapes are 1 s apart: rate() needs two samples after a series' first increase.
PANELS_TIMEOUT_S = 30.0
METRIC_RE = re.compile(r"\b(capture_[a-z0-9_]+|up)\b(?!\s*\()")


def deploy_job() -> str:
    """The scrape job of the deployment's config, which the alerts select by name."""
    [job] = yaml.safe_load(DEPLOY_CONFIG.read_text())["scrape_configs"]
    name: str = job["job_name"]
    return name


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, Grafana variables filled in."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: give the variable a value: {expr}"
            queries.append((panel["title"], expr))
    assert queries, "no panel queries found"
    return queries


def alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


class Traffic:
    """Rounds of requests that give every panel something to show (one per poll)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def post(self, body: bytes, *, key: str | None = KEY, gzip: bool = False) -> int:
        # one connection per request: with workers, the kernel spreads them over both
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            return self._post(connection, body, key=key, gzip=gzip)
        finally:
            connection.close()

    def _post(
        self,
        connection: http.client.HTTPConnection,
        body: bytes,
        *,
        key: str | None = KEY,
        gzip: bool = False,
    ) -> int:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if gzip:
            headers["Content-Encoding"] = "gzip"
        connection.request("POST", "/v1/batch", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    def round(self) -> None:
        assert self.post(batch_body(track_played(), track_played())) == 200
        assert self.post(batch_body(track_played(), compress=True), gzip=True) == 200
        # a dead letter: a negative position breaks the plan's `position_ms >= 0`
        invalid = track_played(properties={"track_id": "t", "artist_id": "a", "position_ms": -1})
        assert self.post(batch_body(invalid)) == 200
        assert self.post(batch_body(track_played()), key=None) == 401
        # a retry after a lost response: the same events on one connection reach one process,
        # whose dedup window drops them
        retried = batch_body(track_played())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            assert self._post(connection, retried) == 200
            assert self._post(connection, retried) == 200
        finally:
            connection.close()
        # what a load balancer's health check does; it refreshes capture_sink_ready
        for _ in range(4):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request("GET", "/readyz")
                assert connection.getresponse().status == 200
            finally:
                connection.close()


@pytest.fixture(params=[1, 2], ids=["single-process", "two-workers"])
def collector_port(
    request: pytest.FixtureRequest, kafka_broker: KafkaBroker, tmp_path: Path
) -> Iterator[int]:
    config = tmp_path / "collector.toml"
    config.write_text(CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "CAPTURE_PORT": str(port),
        "CAPTURE_WORKERS": str(request.param),
        "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "CAPTURE_CONFIG_FILE": str(config),
        "CAPTURE_DEDUP_WINDOW_S": "600",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes its own
    process = subprocess.Popen([str(CAPTURE), "serve"], env=env)
    try:
        wait_ready(port, process)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def empty_panels(prometheus: PrometheusServer) -> list[str]:
    """Panel queries with no series, or none with a number (NaN shows nothing), or, for a
    panel of traffic, none above 0."""
    empty = []
    for title, expr in panel_queries():
        values = [float(series["value"][1]) for series in prometheus.query(expr)]
        lowest = -math.inf if title in ZERO_WHEN_HEALTHY else 0.0
        if not any(math.isfinite(value) and value > lowest for value in values):
            empty.append(f"{title!r}: {expr} -> {values}")
    return empty


def test_the_panels_allowed_to_read_zero_exist() -> None:
    assert {title for title, _ in panel_queries()} >= ZERO_WHEN_HEALTHY


def test_every_dashboard_query_and_alert_has_series(collector_port: int) -> None:
    traffic = Traffic(collector_port)
    with PrometheusServer(
        {deploy_job(): [f"127.0.0.1:{collector_port}"]}, rule_files=[ALERTS]
    ) as prometheus:
        deadline = time.monotonic() + PANELS_TIMEOUT_S
        while True:
            traffic.round()
            empty = empty_panels(prometheus)
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert empty == [], "dashboard panels without series after traffic"

        # every alert expression evaluates, and every metric it names has real series
        with pytest.raises(PromQLError):  # so a query that does not parse cannot pass
            prometheus.query("sum(")
        for alert, expr in alert_exprs().items():
            prometheus.query(expr)  # PromQLError if it does not parse
            for name in set(METRIC_RE.findall(expr)):
                assert prometheus.query(name), f"{alert}: no series named {name}"
        assert prometheus.query(f'up{{job="{deploy_job()}"}} == 1'), "the job the alerts name"
        # ... and Prometheus evaluated each as a rule without an error
        rules = [
            rule
            for group in prometheus.api("rules")["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        ]
        assert {rule["name"] for rule in rules} == set(alert_exprs())
        for rule in rules:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
