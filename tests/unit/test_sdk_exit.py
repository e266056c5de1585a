"""The bounded flush at interpreter exit, in a real child interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec

CHILD = textwrap.dedent(
    """
    import sys, threading
    from capture_sdk import Client, Response, Transport

    class FileTransport(Transport):
        def send(self, body, headers):
            if sys.argv[2] == "hang":
                threading.Event().wait(60)
            with open(sys.argv[1], "ab") as f:
                f.write(body + b"\\n")
            return Response(200, b'{"accepted": 3, "rejected": []}')

    def record(dropped):
        with open(sys.argv[1] + ".dropped", "a") as f:
            f.write("".join(d.reason + "\\n" for d in dropped))

    client = Client(
        transport=FileTransport(),
        gzip=False,
        flush_interval_s=60,
        exit_timeout_s=1.0,
        on_error=record,
    )
    for i in range(3):
        client.track("page_viewed", {"path": f"/{i}"}, anonymous_id="a")
    # no flush(), no shutdown(): the exit hook must send them
    """
)


def run_child(tmp_path: Path, mode: str) -> Path:
    out = tmp_path / "sent.jsonl"
    # timeout: a hang here fails the test instead of blocking the suite
    subprocess.run([sys.executable, "-c", CHILD, str(out), mode], check=True, timeout=30)
    return out


def test_queued_events_are_sent_at_exit(tmp_path: Path) -> None:
    out = run_child(tmp_path, "ok")
    [line] = out.read_bytes().splitlines()
    batch = msgspec.json.decode(line)["batch"]
    assert [e["properties"]["path"] for e in batch] == ["/0", "/1", "/2"]
    assert not Path(f"{out}.dropped").exists()


def test_exit_is_not_held_up_by_a_hanging_collector_and_reports_what_it_drops(
    tmp_path: Path,
) -> None:
    out = run_child(tmp_path, "hang")  # exits well within the 30 s subprocess timeout
    assert not out.exists()
    # issue #12: the exit hook gave up on them without a word to on_error
    assert Path(f"{out}.dropped").read_text().split() == ["shutdown"] * 3
