"""The oracle's SDK rule (devtools/oracle.py) and the SDK driver's ledger (devtools/sdk_load.py):
every event the SDK's track() accepted is in Kafka, counted as dropped, or still spooled, and
the driver's files say so after a SIGKILL too (issue 14)."""

from __future__ import annotations

from pathlib import Path

from capture_sdk import DroppedEvent
from capture_sdk._spool import encode_record
from devtools.load import Ledger, Load
from devtools.oracle import Contents, judge
from devtools.sdk_load import LedgerFile, SdkLedger, spooled_ids


def sdk_verdict(sdk: SdkLedger, events: dict[str, int]) -> tuple[int, list[str], str]:
    result = judge("t", Ledger(), Contents(events=events), load=Load(), sdk=sdk)
    return result.lost, result.problems, result.sdk


def test_accepted_events_all_in_kafka_hold() -> None:
    lost, problems, cell = sdk_verdict(SdkLedger(accepted={"a", "b"}), {"a": 1, "b": 2})
    assert (lost, problems) == (0, [])
    assert cell == "2 / 2 / 0 / 0"


def test_an_accepted_event_nowhere_is_lost() -> None:
    lost, problems, _ = sdk_verdict(SdkLedger(accepted={"a", "b"}), {"a": 1})
    assert lost == 1
    assert any("accepted by the SDK are neither in Kafka" in p for p in problems)


def test_counted_as_dropped_or_still_spooled_is_accounted_for() -> None:
    sdk = SdkLedger(accepted={"a", "b", "c"}, dropped={"b": "queue_full"}, spooled_at_end={"c"})
    lost, problems, cell = sdk_verdict(sdk, {"a": 1})
    assert (lost, problems) == (0, [])
    assert cell == "3 / 1 / queue_full:1 / 1"


def test_sdk_events_in_kafka_count_as_sent() -> None:
    _, problems, _ = sdk_verdict(SdkLedger(accepted={"a"}), {"a": 1})
    assert not any("never sent" in p for p in problems)
    _, problems, _ = sdk_verdict(SdkLedger(accepted={"a"}), {"a": 1, "ghost": 1})
    assert any("never sent" in p for p in problems)


def test_the_ledger_file_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.txt"
    ledger_file = LedgerFile(path)
    ledger_file.accepted("id-1")
    ledger_file.dropped(
        [DroppedEvent(event_id="id-2", event="e", version=1, reason="too_large", detail="")]
    )
    ledger_file.accepted("id-2")
    ledger_file.close()
    with path.open("ab") as f:
        f.write(b"A id-")  # a SIGKILL mid-line
    sdk = SdkLedger()
    sdk.read(path)
    assert sdk.accepted == {"id-1", "id-2"}
    assert sdk.dropped == {"id-2": "too_large"}


def test_spooled_ids_reads_intact_records_only(tmp_path: Path) -> None:
    good = encode_record(b'{"event":"e","version":1,"event_id":"s-1"}')
    torn = encode_record(b'{"event":"e","version":1,"event_id":"s-2"}')[:-5]
    (tmp_path / "000000000000.seg").write_bytes(good + torn)
    (tmp_path / "notes.txt").write_bytes(good.replace(b"s-1", b"x-1"))
    assert spooled_ids(tmp_path) == {"s-1"}
