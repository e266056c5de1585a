"""Lock the public names of each package: a change here is a deliberate API change."""

from __future__ import annotations

from pathlib import Path

import capture_sdk
import capture_sdk.prometheus
import capture_sdk.testing
import collector
import event_schemas


def test_capture_sdk_exports() -> None:
    assert sorted(capture_sdk.__all__) == [
        "AiohttpTransport",
        "AsyncClient",
        "AsyncTransport",
        "CaptureError",
        "Client",
        "ClientStats",
        "ConfigurationError",
        "DroppedEvent",
        "FieldError",
        "HttpTransport",
        "InvalidEventError",
        "Response",
        "RetryPolicy",
        "Transport",
        "TransportError",
        "__version__",
    ]
    assert capture_sdk.testing.__all__ == [
        "AsyncRecordingTransport",
        "RecordingTransport",
        "Response",
    ]
    assert capture_sdk.prometheus.__all__ == ["StatsCollector", "register"]


def test_collector_exports() -> None:
    assert sorted(collector.__all__) == ["Settings", "SettingsError", "create_app", "load_settings"]


def test_event_schemas_exports() -> None:
    assert sorted(event_schemas.__all__) == [
        "COMPATIBILITY_MODES",
        "EventSchema",
        "PLAN_DIR",
        "SchemaLoadError",
        "SchemaMetadata",
        "SchemaRegistry",
        "Violation",
        "check_pair",
        "check_registry",
        "load_registry",
        "load_schema_file",
        "python_source",
        "typescript_source",
    ]


def test_every_export_exists() -> None:
    for module in (
        capture_sdk,
        capture_sdk.testing,
        capture_sdk.prometheus,
        collector,
        event_schemas,
    ):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_sdk_and_collector_do_not_import_each_other() -> None:
    import subprocess
    import sys

    code = (
        "import sys, capture_sdk; assert 'collector' not in sys.modules;"
        " import collector.app; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_replay_and_schemas_start_without_the_web_server(tmp_path: Path) -> None:
    """`capture replay` and `capture schemas` import neither aiohttp nor prometheus_client:
    together they were ~1 s of each replay's start-up (issue 17)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from collector.cli import main\n"
        f"main(['replay', '--data-dir', {str(tmp_path)!r}, '--topic', 'events.x', '--dry-run'])\n"
        "main(['schemas', 'check'])\n"
        "print(sorted(m for m in ('aiohttp', 'prometheus_client', 'aiokafka') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "unknown topic" in result.stderr  # the replay ran as far as reading the log
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr
