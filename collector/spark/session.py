"""Start a SparkSession for the engine, or say exactly what is missing (exit code 2).

The Kafka source is `spark-sql-kafka` of the same version as pyspark, resolved from Maven
Central through `spark.jars.packages` into an Ivy cache beside the broker's jars, so it is
fetched once and works offline after. Hadoop's client jars are excluded: pyspark ships them.
Nothing here reads or writes events.

    python -m collector.spark.session fetch    # resolve the connector into the cache, exit
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.cache import cache_root as cache_root
from collector.replay.errors import BadInput

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The Kafka connector must match pyspark's own version; the `spark` extra pins pyspark to a
# version whose connector and its dependencies Maven Central serves.
KAFKA_CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"
HADOOP_EXCLUDES = "org.apache.hadoop:hadoop-client-runtime,org.apache.hadoop:hadoop-client-api"
MIN_JAVA = 17
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
INSTALL_HINT = "pip install 'event-capture[spark]'"


def ivy_dir() -> Path:
    return cache_root() / "ivy"


class SparkMissing(BadInput):
    """Spark cannot start here: no pyspark (the extra) or no Java; the message says which."""


def check_requirements() -> None:
    """Raise SparkMissing naming what to install; nothing is started."""
    for module in ("pyspark", "pyarrow"):
        # an import, not find_spec: a broken install (pyspark without py4j) counts as missing
        try:
            importlib.import_module(module)
        except ImportError:
            raise SparkMissing(
                f"--engine spark needs pyspark[sql] ({module} is missing): {INSTALL_HINT}"
            ) from None
    java = _java()
    if java is None:
        home = os.environ.get("JAVA_HOME")
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH"
        raise SparkMissing(
            f"--engine spark needs Java {MIN_JAVA} or newer: {where} (install a JDK/JRE, "
            "e.g. apt-get install openjdk-17-jre-headless, and set JAVA_HOME or PATH)"
        )
    version = _java_major(java)
    if version is not None and version < MIN_JAVA:
        raise SparkMissing(
            f"--engine spark needs Java {MIN_JAVA} or newer; {java} is Java {version} (install "
            "e.g. openjdk-17-jre-headless and point JAVA_HOME or PATH at it)"
        )


def _java() -> str | None:
    """The java Spark's launcher will run: $JAVA_HOME/bin/java if JAVA_HOME is set, else PATH's."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def _java_major(java: str) -> int | None:
    """The major version `java -version` reports; None when it cannot be run or read."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _major_of(out)


# the first `version "..."` of `java -version`; lines like `Picked up JAVA_TOOL_OPTIONS` precede it
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')


def _major_of(version_output: str) -> int | None:
    """`openjdk version "17.0.15"` is 17, `java version "1.8.0_392"` is 8 (the old scheme)."""
    found = _VERSION.search(version_output)
    if found is None:
        return None
    major = int(found.group(1))
    if major == 1 and found.group(2) is not None:
        return int(found.group(2))
    return major


def kafka_package() -> str:
    import pyspark

    return f"{KAFKA_CONNECTOR}:{pyspark.__version__}"


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """`--spark-conf k=v` flags into a dict; a pair without `=` is bad input."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--spark-conf {pair!r}: use key=value")
        conf[key.strip()] = value
    return conf


def connector_settings() -> dict[str, str]:
    """How the Kafka connector is added: the same for `fetch` and for every session."""
    return {
        "spark.jars.packages": kafka_package(),
        "spark.jars.excludes": HADOOP_EXCLUDES,
        "spark.jars.ivy": str(ivy_dir()),
    }


def start_session(
    app_name: str, master: str | None = None, conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A SparkSession with the Kafka connector. `master` None keeps what spark-submit set,
    else `local[*]`. `conf` (--spark-conf) wins over every default here."""
    check_requirements()
    # the Python workers run this interpreter (the venv that has the collector installed)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    # under spark-submit the JVM is already up with its --master and --conf: keep them
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    chosen = master or (None if submitted else "local[*]")
    settings = connector_settings()
    settings["spark.sql.session.timeZone"] = "UTC"
    settings["spark.ui.showConsoleProgress"] = "false"
    if chosen is not None and chosen.startswith("local"):
        # a laptop run listens on loopback only, whatever the host name resolves to; the web
        # UI takes its address from SPARK_LOCAL_IP alone (else every interface)
        settings["spark.driver.bindAddress"] = "127.0.0.1"
        settings["spark.driver.host"] = "127.0.0.1"
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    if chosen is not None:
        builder = builder.master(chosen)
    for key, value in settings.items():
        builder = builder.config(key, value)
    # Py4J logs every connection it opens and closes at INFO, some from __del__ at exit
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = builder.getOrCreate()
    context = session.sparkContext
    context.setLogLevel(os.environ.get("CAPTURE_SPARK_LOG_LEVEL", "ERROR"))
    if SHUFFLE_PARTITIONS not in (conf or {}) and not context.getConf().contains(
        SHUFFLE_PARTITIONS
    ):
        # Spark's fixed 200 makes every dedup a few hundred near-empty tasks on a laptop;
        # twice the cores the session has is the same rule at any size (--spark-conf wins)
        session.conf.set(SHUFFLE_PARTITIONS, str(max(2, 2 * context.defaultParallelism)))
    return session


def stop_session(session: SparkSession) -> None:
    """Stop the session and, if this process launched it, the JVM too (Py4J's sockets
    closed), so that a later start_session here starts afresh with its own settings."""
    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    if gateway is None or getattr(gateway, "proc", None) is None:
        return  # under spark-submit the JVM is the parent process: leave it
    SparkContext._gateway = None
    SparkContext._jvm = None
    _close(gateway)


def _close(gateway: Any) -> None:
    """Shut a gateway from launch_gateway; its JVM exits when its stdin closes."""
    gateway.shutdown()
    gateway.proc.stdin.close()
    gateway.proc.wait(timeout=60)


def connector_jar() -> Path:
    """Where Ivy retrieves the connector itself once it is resolved."""
    import pyspark

    artifact = KAFKA_CONNECTOR.split(":")[1]
    return ivy_dir() / "jars" / f"org.apache.spark_{artifact}-{pyspark.__version__}.jar"


def fetch() -> Path:
    """Resolve the connector and its dependencies into the Ivy cache; start no SparkContext.

    Spark's launcher resolves `spark.jars.packages` before it opens the Py4J gateway, so
    opening the gateway with the session's own connector settings and closing it again
    leaves exactly what a later start_session resolves from, offline. Raises SparkMissing
    (what to install) or RuntimeError (Ivy's log: Maven Central unreachable, say)."""
    check_requirements()
    from pyspark import SparkConf
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf(loadDefaults=False)
    for key, value in connector_settings().items():
        conf.set(key, value)
    # Ivy's resolution report is noise when it works and the whole story when it does not
    with tempfile.TemporaryFile(mode="w+") as log:
        output = {"stdout": log, "stderr": log}
        try:
            gateway = launch_gateway(conf, popen_kwargs=output)  # type: ignore[no-untyped-call]
        except RuntimeError:
            log.seek(0)
            raise RuntimeError(
                f"could not resolve {kafka_package()} into {ivy_dir()}:\n{log.read()}"
            ) from None
        _close(gateway)
    jar = connector_jar()
    if not jar.is_file():
        raise RuntimeError(f"resolution of {kafka_package()} left no {jar}")
    return ivy_dir()


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m collector.spark.session", description="The Spark engine's set-up."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="resolve the Kafka connector into the Ivy cache and exit")
    sub.add_parser("check", help="say what is missing to start Spark here (exit 2), or nothing")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch())
        else:
            check_requirements()
    except SparkMissing as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except RuntimeError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
