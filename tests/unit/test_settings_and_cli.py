"""Settings from environment and flags, and the `capture` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.cli import main
from collector.settings import Settings, SettingsError, load_settings


def test_defaults_choose_the_file_sink() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.sink_kind == "file"


def test_kafka_bootstrap_servers_choose_the_kafka_sink() -> None:
    settings = load_settings({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert settings.sink_kind == "kafka"


def test_environment_values_are_typed_and_flags_win() -> None:
    env = {"CAPTURE_PORT": "9000", "CAPTURE_SINK_TIMEOUT_S": "2.5", "CAPTURE_DATA_DIR": "/x"}
    settings = load_settings(env, {"port": "9100", "data_dir": None})
    assert (settings.port, settings.sink_timeout_s, settings.data_dir) == (9100, 2.5, "/x")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CAPTURE_PORT": "eighty"}, "CAPTURE_PORT"),
        ({"CAPTURE_PORT": "70000"}, "CAPTURE_PORT"),
        ({"CAPTURE_SINK": "s3"}, "CAPTURE_SINK"),
        ({"CAPTURE_SINK_TIMEOUT_S": "0"}, "CAPTURE_SINK_TIMEOUT_S"),
        ({"CAPTURE_SINK": "kafka"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({}, {"prot": 1})


@pytest.mark.parametrize(
    "argv", [["--help"], ["serve", "--help"], ["schemas", "--help"], ["schemas", "check", "--help"]]
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: capture" in capsys.readouterr().out


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for field in Settings.__struct_fields__:
        assert "--" + field.replace("_", "-") in out


def test_serve_with_a_bad_setting_exits_2_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector.cli", "serve", "--port", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "CAPTURE_PORT" in result.stderr


def test_schemas_check_lists_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "check"]) == 0
    out = capsys.readouterr().out
    assert "track_played v2" in out
    assert "playlist_updated v1" in out


def test_schemas_check_fails_on_a_bad_plan(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 1
    assert "no schema files" in capsys.readouterr().err


def test_several_workers_need_the_kafka_sink() -> None:
    with pytest.raises(SettingsError, match="CAPTURE_WORKERS=2 needs the kafka sink"):
        load_settings({"CAPTURE_WORKERS": "2"})
    settings = load_settings({"CAPTURE_WORKERS": "2", "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert settings.workers == 2
