"""The collector: an aiohttp service that validates events and hands them to a sink.

Imports `event_schemas`, never `capture_sdk`.
"""

from collector.app import create_app
from collector.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]
