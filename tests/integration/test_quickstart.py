"""The README's run path: `capture serve` on the file sink, then the SDK demo against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec

from devtools.ports import free_port
from tests.waiting import wait_ready

REPO = Path(__file__).resolve().parents[2]
CAPTURE = Path(sys.executable).with_name("capture")


def test_demo_events_land_in_the_data_directory(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, "CAPTURE_PORT": str(port), "CAPTURE_DATA_DIR": str(data_dir)}
    env.pop("CAPTURE_KAFKA_BOOTSTRAP_SERVERS", None)
    collector = subprocess.Popen([str(CAPTURE), "serve"], env=env, cwd=tmp_path)
    try:
        wait_ready(port, collector)
        demo = subprocess.run(
            [
                sys.executable,
                str(REPO / "examples" / "quickstart.py"),
                "--endpoint",
                f"http://127.0.0.1:{port}",
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "sent=5 rejected=1" in demo.stdout
        assert "events.track_played.jsonl" in demo.stdout
    finally:
        collector.terminate()
        assert collector.wait(timeout=30) == 0  # clean shutdown on SIGTERM
    files = sorted(p.name for p in data_dir.glob("*.jsonl"))
    assert files == [
        "events._invalid.jsonl",
        "events.artist_profile_viewed.jsonl",
        "events.page_viewed.jsonl",
        "events.playlist_updated.jsonl",
        "events.track_played.jsonl",
    ]
    played = [
        msgspec.json.decode(line)
        for line in (data_dir / "events.track_played.jsonl").read_bytes().splitlines()
    ]
    assert [p["value"]["version"] for p in played] == [1, 2]
    [dead] = [
        msgspec.json.decode(line)
        for line in (data_dir / "events._invalid.jsonl").read_bytes().splitlines()
    ]
    assert dead["value"]["reason"] == "invalid_properties"
    assert dead["value"]["errors"][0]["path"] == "$.properties.position_ms"
