"""The demo page of `make run` (issue 13, section 3) in a real headless Chromium.

`capture serve --demo 1` on the file sink, as scripts/run.sh starts it, serves the page at its
own /demo. Each button is clicked once (Runtime.evaluate, nothing intercepted): the event_ids
the page tracked must be exactly those in the file sink, duplicates counted, the invalid one in
the dead-letter log only, and the page's live stats must say so.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from devtools.chromium import Chromium, find_chromium
from devtools.node import ensure_built
from devtools.ports import free_port
from tests.waiting import wait_ready

CAPTURE = Path(sys.executable).with_name("capture")
# each button of collector/demo.html, and the file-sink log its event lands in
BUTTONS = {
    "play": "events.track_played",
    "artist": "events.artist_profile_viewed",
    "playlist": "events.playlist_updated",
    "page": "events.page_viewed",
    "invalid": "events._invalid",
}
VALID = len(BUTTONS) - 1


@pytest.fixture(scope="module")
def sdk_bundle() -> Path:
    if find_chromium() is None:
        pytest.fail("chromium not found: scripts/browser-deps.sh installs it")
    return ensure_built()


@pytest.fixture
def demo_collector(tmp_path: Path, sdk_bundle: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, data dir) of `capture serve --demo 1` on the file sink."""
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")}
    command = [str(CAPTURE), "serve", "--sink", "file", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--demo", "1", "--demo-bundle", str(sdk_bundle)]
    collector = subprocess.Popen(command, env=env, cwd=tmp_path)
    try:
        wait_ready(port, collector)
        yield f"http://127.0.0.1:{port}", data_dir
    finally:
        collector.terminate()
        assert collector.wait(timeout=30) == 0  # clean shutdown on SIGTERM


def logged_ids(data_dir: Path) -> dict[str, collections.Counter[str]]:
    """event_ids per topic log of the file sink, each with how often it is there."""
    found: dict[str, collections.Counter[str]] = {}
    for log_file in data_dir.glob("*.jsonl"):
        records = [msgspec.json.decode(line) for line in log_file.read_bytes().splitlines()]
        found[log_file.stem] = collections.Counter(
            dict(record["headers"])["event_id"] for record in records
        )
    return found


async def test_each_button_tracks_an_event_that_lands_in_the_file_sink(
    demo_collector: tuple[str, Path],
) -> None:
    base, data_dir = demo_collector
    async with Chromium() as browser:
        page = await browser.new_page(base + "/demo")
        await page.wait_for("window.demoClient !== undefined")
        for button in BUTTONS:
            await page.evaluate(f"document.querySelector('#{button}').click()")
        tracked = await page.evaluate("window.demoTracked")
        # delivered, as the page shows it: every valid event sent, the invalid one rejected
        await page.wait_for(
            f"document.getElementById('stat-sent').textContent === '{VALID}'"
            " && document.getElementById('stat-queued').textContent === '0'"
            " && document.getElementById('stat-reasons').textContent === 'rejected: 1'"
        )
        dropped = await page.evaluate("window.demoDropped.map((d) => d.event_id)")
    assert len(tracked) == len(BUTTONS)
    expected = {
        topic: collections.Counter([entry["event_id"]])
        for topic, entry in zip(BUTTONS.values(), tracked, strict=True)
    }
    assert logged_ids(data_dir) == expected  # exactly once each, nothing else
    assert dropped == [tracked[-1]["event_id"]]
