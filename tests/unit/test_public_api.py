"""Lock the public names of each package: a change here is a deliberate API change."""

from __future__ import annotations

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
