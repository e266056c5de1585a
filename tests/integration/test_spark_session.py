"""start_session and `fetch` against the Ivy cache `make test` warmed (scripts/test.sh runs
`python -m collector.spark.session fetch` first), with the network shut: the JVM that resolves
`spark.jars.packages` is given a proxy on a closed loopback port, so any download fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.spark.session import (
    connector_jar,
    ivy_dir,
    kafka_package,
    start_session,
    stop_session,
)

if sys.platform != "linux":  # the listening sockets are read from /proc
    pytest.skip("reads /proc", allow_module_level=True)

KAFKA_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
# Spark's launcher JVM (where Ivy runs) takes its options from SPARK_SUBMIT_OPTS
NO_NETWORK = " ".join(
    f"-D{scheme}.proxyHost=127.0.0.1 -D{scheme}.proxyPort=9" for scheme in ("http", "https")
)
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 in /proc/net/tcp{,6}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", NO_NETWORK)
    # start_session sets SPARK_LOCAL_IP for local masters: start without it, restore after
    monkeypatch.setenv("SPARK_LOCAL_IP", "")
    monkeypatch.delenv("SPARK_LOCAL_IP")


def listening_addresses(pid: int) -> set[str]:
    """The local address (hex, as /proc shows it) of every TCP socket `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link.removeprefix("socket:[").removesuffix("]"))
    addresses = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for fields in (line.split() for line in lines):
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(fields[1])
    return addresses


@pytest.mark.usefixtures("offline")
def test_session_on_a_warm_cache_has_the_connector_utc_and_loopback() -> None:
    from pyspark import SparkContext

    # this test needs a JVM of its own: one a module left running would be reused here
    assert SparkContext._active_spark_context is None, "a Spark session is still running"
    session = start_session("test_spark_session")
    try:
        jvm = session._jvm
        assert jvm is not None
        # packages are on Spark's own class loader, not the JVM's system one
        provider = jvm.org.apache.spark.util.Utils.classForName(KAFKA_PROVIDER, True, False)
        assert provider.getName() == KAFKA_PROVIDER
        # evaluated in the JVM: pyspark's collect() leaves its result socket to the collector
        now = session._jsparkSession.sql("SELECT current_timezone()").first()
        assert now.getString(0) == "UTC"
        conf = session.sparkContext.getConf()
        assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
        assert conf.get("spark.driver.host") == "127.0.0.1"
        sockets = listening_addresses(jvm.java.lang.ProcessHandle.current().pid())
        # the web UI is among them (it binds by SPARK_LOCAL_IP, not by spark.driver.*)
        ui_port = int(str(session.sparkContext.uiWebUrl).rsplit(":", 1)[1])
        assert f"{ui_port:04X}" in {address.rsplit(":", 1)[1] for address in sockets}
        assert {address.rsplit(":", 1)[0] for address in sockets} <= LOOPBACK, sockets
    finally:
        stop_session(session)


@pytest.mark.usefixtures("offline")
def test_fetch_on_a_warm_cache_needs_no_network() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector.spark.session", "fetch"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{ivy_dir()}\n"
    assert connector_jar().is_file()


@pytest.mark.usefixtures("offline")
def test_fetch_into_an_empty_cache_offline_fails_with_ivys_reason(tmp_path: Path) -> None:
    # with the proxy closed nothing can be downloaded into the empty cache
    result = subprocess.run(
        [sys.executable, "-m", "collector.spark.session", "fetch"],
        env={**os.environ, "EVENT_CAPTURE_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    first, _, log = result.stderr.partition("\n")
    assert first == (
        "python -m collector.spark.session: could not resolve "
        f"{kafka_package()} into {tmp_path / 'ivy'}:"
    )
    assert "unresolved dependency: org.apache.spark#spark-sql-kafka-0-10_2.13" in log
    assert not list((tmp_path / "ivy").glob("jars/*.jar"))
