"""What the Spark engine says when it cannot start here (no Java, an old Java, no pyspark),
and the small parsers of session.py. Nothing here starts Spark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.replay.errors import BadInput
from collector.spark import session
from collector.spark.session import SparkMissing, check_requirements, parse_conf

CAPTURE = Path(sys.executable).parent / "capture"
NO_PYSPARK = (
    "--engine spark needs pyspark[sql] (pyspark is missing): pip install 'event-capture[spark]'"
)
JAVA_HINT = (
    "(install a JDK/JRE, e.g. apt-get install openjdk-17-jre-headless, and set JAVA_HOME or PATH)"
)
NO_JAVA_ON_PATH = f"--engine spark needs Java 17 or newer: no `java` on PATH {JAVA_HINT}"

# Runs the module's `check` command with every import of pyspark refused, as when the
# `spark` extra is not installed.
WITHOUT_PYSPARK = """
import sys

class RefusePyspark:
    def find_spec(self, name, path=None, target=None):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, RefusePyspark())
from collector.spark.session import main
raise SystemExit(main(["check"]))
"""


def fake_java(directory: Path, version_line: str) -> Path:
    """A `java` that reports `version_line` on stderr the way `java -version` does."""
    directory.mkdir(parents=True, exist_ok=True)
    java = directory / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return java


def run_check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = args or ("-m", "collector.spark.session", "check")
    return subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=60
    )


def without_java(tmp_path: Path) -> dict[str, str]:
    """This environment, with no JAVA_HOME and a PATH that holds no `java`."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(empty)
    return env


def test_java_home_without_java_is_missing_java(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spark's launcher runs $JAVA_HOME/bin/java when JAVA_HOME is set, whatever PATH holds
    home = tmp_path / "jdk"
    home.mkdir()
    monkeypatch.setenv("JAVA_HOME", str(home))
    with pytest.raises(SparkMissing) as raised:
        check_requirements()
    assert str(raised.value) == (
        f"--engine spark needs Java 17 or newer: JAVA_HOME={home} has no bin/java {JAVA_HINT}"
    )
    assert isinstance(raised.value, BadInput)
    assert raised.value.exit_code == 2

    result = run_check({**os.environ, "JAVA_HOME": str(home)})
    assert result.returncode == 2
    assert result.stderr == f"python -m collector.spark.session: {raised.value}\n"


def test_no_java_on_path_is_missing_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = without_java(tmp_path)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", env["PATH"])
    with pytest.raises(SparkMissing) as raised:
        check_requirements()
    assert str(raised.value) == NO_JAVA_ON_PATH
    assert raised.value.exit_code == 2

    result = run_check(env)
    assert result.returncode == 2
    assert result.stderr == f"python -m collector.spark.session: {NO_JAVA_ON_PATH}\n"


def test_unimportable_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.modules[name] = None makes every import of it fail (find_spec would raise ValueError)
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(SparkMissing) as raised:
        check_requirements()
    assert str(raised.value) == NO_PYSPARK
    assert raised.value.exit_code == 2

    result = run_check(dict(os.environ), "-c", WITHOUT_PYSPARK)
    assert result.returncode == 2
    assert result.stderr == f"python -m collector.spark.session: {NO_PYSPARK}\n"


def test_java_8_is_too_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = fake_java(tmp_path / "bin", 'java version "1.8.0_392"')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(java.parent))
    expected = (
        f"--engine spark needs Java 17 or newer; {java} is Java 8 (install e.g. "
        "openjdk-17-jre-headless and point JAVA_HOME or PATH at it)"
    )
    with pytest.raises(SparkMissing) as raised:
        check_requirements()
    assert str(raised.value) == expected
    assert raised.value.exit_code == 2

    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    result = run_check({**env, "PATH": str(java.parent)})
    assert result.returncode == 2
    assert result.stderr == f"python -m collector.spark.session: {expected}\n"


def test_an_old_java_home_wins_over_a_good_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_java(tmp_path / "jdk8" / "bin", 'openjdk version "11.0.2" 2019-01-15')
    fake_java(tmp_path / "bin", 'openjdk version "21" 2023-09-19')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk8"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(SparkMissing, match=f"; {old} is Java 11 "):
        check_requirements()


def test_a_new_enough_java_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_java(tmp_path / "bin", 'openjdk version "17.0.15" 2025-04-15')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    check_requirements()


def test_capture_replay_on_spark_without_java_exits_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = subprocess.run(
        [str(CAPTURE), "replay", "--engine", "spark", "--data-dir", str(data_dir), "--topic", "x"],
        env=without_java(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert f"capture replay: {NO_JAVA_ON_PATH}\n" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "21" 2023-09-19\nOpenJDK Runtime Environment', 21),
        ('Picked up JAVA_TOOL_OPTIONS: -Dx="1.2"\nopenjdk version "25.0.1" 2025-10-21', 25),
        ("no version here", None),
    ],
)
def test_java_major_version(tmp_path: Path, output: str, major: int | None) -> None:
    assert session._major_of(output) == major
    java = tmp_path / "java"
    java.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{output}\nEOF\n")
    java.chmod(0o755)
    assert session._java_major(str(java)) == major


def test_java_major_of_a_java_that_cannot_run(tmp_path: Path) -> None:
    not_executable = tmp_path / "java"
    not_executable.write_text("")
    assert session._java_major(str(not_executable)) is None


def test_parse_conf_pairs() -> None:
    assert parse_conf([]) == {}
    assert parse_conf(
        ["spark.executor.memory=2g", " spark.a = b=c", "spark.empty=", "spark.executor.memory=4g"]
    ) == {"spark.executor.memory": "4g", "spark.a": " b=c", "spark.empty": ""}


@pytest.mark.parametrize("pair", ["spark.executor.memory", "=value", " =value", ""])
def test_parse_conf_refuses_a_bad_pair(pair: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_conf(["spark.ok=1", pair])
    assert str(raised.value) == f"--spark-conf {pair!r}: use key=value"
    assert raised.value.exit_code == 2
