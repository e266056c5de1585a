"""The Python SDK installs alone (#13, section 4): its wheel, and nothing else, delivers events.

Builds both wheels with scripts/wheels.sh (what `make wheels` runs), installs only the SDK's
into a fresh venv (msgspec comes from the index; pip's cache lives in the repo's `.cache/`),
checks that none of the collector's dependencies came along, then tracks events with that
venv's python through a real `capture serve --sink file` and reads them back from its log.
"""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from packaging.requirements import Requirement

import capture_sdk
from collector.sinks.file import LogLine, topic_path
from devtools.ports import free_port
from tests.waiting import wait_ready

REPO = Path(__file__).resolve().parents[2]
CAPTURE = Path(sys.executable).with_name("capture")
# pip's cache for msgspec and hatchling (the build backend), kept in the repo's gitignored
# .cache/ so reruns need not download them again (where the index's answers may be cached)
PIP_ENV = {
    **os.environ,
    "PIP_CACHE_DIR": str(REPO / ".cache" / "pip"),
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
}
SDK_PACKAGES = ("capture_sdk", "event_schemas")
# what the collector needs and the SDK must not bring: the point of the split
ABSENT = ("aiohttp", "aiokafka", "prometheus_client", "orjson", "cramjam", "collector")
EVENTS = 25

KEY = "server-key-wheel-0123456789abcdef"
SECRET = "signing-secret-wheel-0123456789ab"  # noqa: S105  # a test secret
CONFIG = f"""
[[sources]]
name = "wheel-test"
kind = "server"
key = "{KEY}"
events = "*"
signing_secrets = ["{SECRET}"]
"""

# Run by the fresh venv's python, in isolated mode, from a directory outside the repo: every
# import below must come from the installed wheel (checked against sys.prefix). It walks the
# sync Client's paths (signing, gzip, strict local validation against the packaged plan, disk
# spool, typed events), code generation, and AsyncClient with and without aiohttp.
SCRIPT = """
import asyncio, importlib.metadata, importlib.util, json, sys

import capture_sdk, event_schemas
from capture_sdk import AsyncClient, Client, InvalidEventError
from capture_sdk.testing import AsyncRecordingTransport
from event_schemas import load_registry, python_source, typescript_source
from event_schemas.typed import PageViewedV1

endpoint, n, key, secret, spool, absent = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
out = {"prefix": sys.prefix, "files": [capture_sdk.__file__, event_schemas.__file__]}
out["absent"] = [m for m in absent.split(",") if importlib.util.find_spec(m) is None]
out["dists"] = sorted(d.metadata["Name"] for d in importlib.metadata.distributions())
try:
    AsyncClient(endpoint)
except ImportError as exc:
    out["async_error"] = str(exc)
try:
    import capture_sdk.prometheus
except ImportError as exc:
    out["prometheus_error"] = str(exc)

async def async_with_own_transport():
    transport = AsyncRecordingTransport()
    async with AsyncClient(transport=transport) as client:
        client.track("page_viewed", {"path": "/async"}, anonymous_id="a")
    return len(transport.events)
out["async_sent"] = asyncio.run(async_with_own_transport())

registry = load_registry()
out["codegen"] = bool(python_source(registry)) and bool(typescript_source(registry))

client = Client(endpoint, write_key=key, signing_secret=secret, validation="strict",
                spool_dir=spool, flush_interval_s=0.05)
try:
    client.track("page_viewed", {"path": "no-leading-slash"}, anonymous_id="a")
except InvalidEventError:
    out["strict"] = True
ids = [client.track(PageViewedV1(path=f"/wheel/{i}"), anonymous_id=f"a-{i}") for i in range(n)]
out["shutdown"] = client.shutdown(timeout_s=30)
stats = client.stats()
dropped = sum(stats.dropped.values())
out["stats"] = {"sent": stats.sent, "rejected": stats.rejected, "dropped": dropped}
out["ids"] = ids
print(json.dumps(out))
"""


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    run([REPO / "scripts" / "wheels.sh", out], env={**PIP_ENV, "PYTHON": sys.executable})
    built = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert sorted(built) == ["event_capture", "event_capture_sdk"], built
    return built


@pytest.fixture(scope="module")
def sdk_python(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site packages) holding the SDK wheel and what it requires."""
    venv = tmp_path_factory.mktemp("sdk-venv")
    # no pip inside: this venv's pip is driven from outside (`pip --python`), which is faster
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    install: list[str | Path] = ["--python", python, "install", "--quiet"]
    run([sys.executable, "-m", "pip", *install, wheels["event_capture_sdk"]], env=PIP_ENV)
    return python


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def requirements(wheel: Path) -> dict[str, Requirement]:
    lines = metadata(wheel).get_all("Requires-Dist") or []
    return {(r := Requirement(line)).name: r for line in lines}


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


def repo_files(package: str) -> Iterator[str]:
    for path in (REPO / package).rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path.relative_to(REPO).as_posix()


def test_the_sdk_wheel_requires_msgspec_only_and_the_collector_pins_it(
    wheels: dict[str, Path],
) -> None:
    sdk = requirements(wheels["event_capture_sdk"])
    markers = {name: str(r.marker) if r.marker else None for name, r in sdk.items()}
    assert markers == {
        "msgspec": None,
        "aiohttp": 'extra == "aiohttp"',
        "prometheus-client": 'extra == "prometheus"',
    }
    version = metadata(wheels["event_capture_sdk"])["Version"]
    assert version == capture_sdk.__version__

    collector = metadata(wheels["event_capture"])
    assert collector["Version"] == version  # the two are released together
    assert str(requirements(wheels["event_capture"])["event-capture-sdk"].specifier) == (
        f"=={version}"
    )
    root = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert root["scripts"] == {"capture": "collector.cli:main"}
    with zipfile.ZipFile(wheels["event_capture"]) as archive:
        [entry_points] = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        assert "capture = collector.cli:main" in archive.read(entry_points).decode()

    # every file of the SDK's packages (the plan's JSON files too) ships in the SDK wheel, and
    # only there: two distributions owning one file would overwrite each other on install
    sdk_files = wheel_files(wheels["event_capture_sdk"])
    collector_files = wheel_files(wheels["event_capture"])
    for package in SDK_PACKAGES:
        assert set(repo_files(package)) <= sdk_files, package
    assert {f.split("/")[0] for f in sdk_files} == set(SDK_PACKAGES)
    assert {f.split("/")[0] for f in collector_files} == {"collector"}


def test_the_sdk_wheel_alone_delivers_to_a_real_collector(sdk_python: Path, tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "capture.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")}
    serve = ["serve", "--sink", "file", "--port", str(port), "--data-dir", str(data_dir)]
    collector = subprocess.Popen(
        [str(CAPTURE), *serve, "--config-file", str(config)], env=env, cwd=tmp_path
    )
    try:
        wait_ready(port, collector)
        (tmp_path / "app").mkdir()
        script = tmp_path / "app" / "track.py"
        script.write_text(SCRIPT)
        args = [f"http://127.0.0.1:{port}", str(EVENTS), KEY, SECRET, str(tmp_path / "spool")]
        done = run(
            [sdk_python, "-I", script, *args, ",".join(ABSENT)],
            cwd=script.parent,
            env={"PATH": os.environ.get("PATH", "")},  # no PYTHONPATH, nothing of the repo
            timeout=60,
        )
    finally:
        collector.terminate()
        assert collector.wait(timeout=30) == 0
    out = json.loads(done.stdout)

    prefix = Path(out["prefix"])
    assert all(Path(f).is_relative_to(prefix) for f in out["files"]), out["files"]
    assert out["absent"] == list(ABSENT)
    assert out["dists"] == ["event-capture-sdk", "msgspec"]
    assert "pip install 'event-capture-sdk[aiohttp]'" in out["async_error"]
    assert "pip install 'event-capture-sdk[prometheus]'" in out["prometheus_error"]
    assert out["async_sent"] == 1
    assert out["codegen"] is True
    assert out["strict"] is True

    assert out["shutdown"] is True
    assert out["stats"] == {"sent": EVENTS, "rejected": 0, "dropped": 0}
    lines = topic_path(data_dir, "events.page_viewed").read_bytes().splitlines()
    landed = [msgspec.json.decode(msgspec.json.decode(line, type=LogLine).value) for line in lines]
    assert sorted(e["event_id"] for e in landed) == sorted(out["ids"])
    assert len(set(out["ids"])) == EVENTS
