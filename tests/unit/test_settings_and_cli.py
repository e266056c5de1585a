"""Settings from environment and flags, and the `capture` command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from collector import cli, startup
from collector.cli import main
from collector.settings import (
    FIELDS,
    Settings,
    SettingsError,
    env_var,
    load_settings,
    parse_bootstrap_servers,
)


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


def test_several_workers_need_the_kafka_or_the_file_sink() -> None:
    with pytest.raises(SettingsError, match="CAPTURE_WORKERS=2 needs the kafka or file sink"):
        load_settings({"CAPTURE_WORKERS": "2", "CAPTURE_SINK": "memory"})
    settings = load_settings({"CAPTURE_WORKERS": "2", "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert settings.workers == 2
    assert load_settings({"CAPTURE_WORKERS": "2"}).workers == 2  # the file sink, one log each


# Issue 12: every bad setting stops start-up with exit 2 and one line naming it. Each field
# has at least one bad value here or in STARTUP_CASES; the coverage test below holds that.
KAFKA = {"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
BAD_VALUES: list[tuple[dict[str, str], str]] = [
    ({"CAPTURE_HOST": "\udcff"}, "CAPTURE_HOST"),
    ({"CAPTURE_WORKERS": "0"}, "CAPTURE_WORKERS"),
    ({"CAPTURE_WORKERS": "65", **KAFKA}, "CAPTURE_WORKERS"),
    ({"CAPTURE_SIGNATURE_TOLERANCE_S": "1" + "0" * 20}, "CAPTURE_SIGNATURE_TOLERANCE_S"),
    ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "::::"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:abc"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:9092,"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "[nope]:9092"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "k:0"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CAPTURE_KAFKA_CLIENT_ID": "\udcff", **KAFKA}, "CAPTURE_KAFKA_CLIENT_ID"),
    ({"CAPTURE_KAFKA_COMPRESSION": "brotli"}, "CAPTURE_KAFKA_COMPRESSION"),
    ({"CAPTURE_KAFKA_LINGER_MS": str(1 << 31), **KAFKA}, "CAPTURE_KAFKA_LINGER_MS"),
    ({"CAPTURE_KAFKA_REQUEST_TIMEOUT_MS": "0", **KAFKA}, "CAPTURE_KAFKA_REQUEST_TIMEOUT_MS"),
    ({"CAPTURE_TOPIC_PREFIX": "events/"}, "CAPTURE_TOPIC_PREFIX"),
    ({"CAPTURE_DEAD_LETTER_TOPIC": "bad/topic"}, "CAPTURE_DEAD_LETTER_TOPIC"),
    ({"CAPTURE_SINK_TIMEOUT_S": "inf"}, "CAPTURE_SINK_TIMEOUT_S"),
    ({"CAPTURE_RETRY_AFTER_S": "1e30"}, "CAPTURE_RETRY_AFTER_S"),
    ({"CAPTURE_SHUTDOWN_TIMEOUT_S": "1e400"}, "CAPTURE_SHUTDOWN_TIMEOUT_S"),
    ({"CAPTURE_MAX_BODY_BYTES": "0"}, "CAPTURE_MAX_BODY_BYTES"),
    ({"CAPTURE_MAX_INFLIGHT_BYTES": "1" + "0" * 20}, "CAPTURE_MAX_INFLIGHT_BYTES"),
    # past zlib's C ssize_t: every gzip request would fail
    ({"CAPTURE_MAX_DECOMPRESSED_BYTES": str(1 << 63)}, "CAPTURE_MAX_DECOMPRESSED_BYTES"),
    ({"CAPTURE_BODY_READ_TIMEOUT_S": "nan"}, "CAPTURE_BODY_READ_TIMEOUT_S"),
    ({"CAPTURE_MAX_EVENT_BYTES": "-1"}, "CAPTURE_MAX_EVENT_BYTES"),
    ({"CAPTURE_MAX_BATCH_EVENTS": "0"}, "CAPTURE_MAX_BATCH_EVENTS"),
    ({"CAPTURE_MAX_JSON_DEPTH": "257"}, "CAPTURE_MAX_JSON_DEPTH"),
    ({"CAPTURE_PII_HASH_KEY": "\udcff"}, "CAPTURE_PII_HASH_KEY"),
    ({"CAPTURE_TRUSTED_PROXIES": "10.0.0.0/33"}, "CAPTURE_TRUSTED_PROXIES"),
    ({"CAPTURE_IP_ANONYMIZE": "maybe"}, "CAPTURE_IP_ANONYMIZE"),
    ({"CAPTURE_DEDUP_WINDOW_S": "inf"}, "CAPTURE_DEDUP_WINDOW_S"),
    ({"CAPTURE_DEDUP_MAX_IDS": "0"}, "CAPTURE_DEDUP_MAX_IDS"),
    ({"CAPTURE_HOT_KEY_RATE_PER_S": "-1"}, "CAPTURE_HOT_KEY_RATE_PER_S"),
    ({"CAPTURE_HOT_KEY_BURST": "0"}, "CAPTURE_HOT_KEY_BURST"),
    ({"CAPTURE_HOT_KEY_MAX_KEYS": "0"}, "CAPTURE_HOT_KEY_MAX_KEYS"),
    ({"CAPTURE_LOG_LEVEL": "debug"}, "CAPTURE_LOG_LEVEL"),
    ({"CAPTURE_LOG_FORMAT": "xml"}, "CAPTURE_LOG_FORMAT"),
    ({"CAPTURE_DEMO": "yes"}, "CAPTURE_DEMO"),
]


@pytest.mark.parametrize(("env", "named"), BAD_VALUES, ids=[named for _, named in BAD_VALUES])
def test_every_bad_value_is_refused_naming_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as raised:
        load_settings(env)
    assert "\n" not in str(raised.value)


MALFORMED_BRACKETS = [
    "[::1",
    "[::1:9092",
    "[::1]]",
    "[[::1]]",
    "[::1]9092",
    "[::1]:",
    "[::1]:9092]",
    "::1]",
    "::1]:9092",
    "k]:9092",
    "k[:9092",
    "[]",
    "[]:9092",
    "[k]:9092",
    "[127.0.0.1]:9092",
    "k:9092,[::1",
]


@pytest.mark.parametrize("servers", MALFORMED_BRACKETS)
def test_malformed_brackets_in_bootstrap_servers_are_refused(servers: str) -> None:
    # aiokafka would raise on them only when the producer starts: a traceback, exit 1
    with pytest.raises(SettingsError, match="CAPTURE_KAFKA_BOOTSTRAP_SERVERS"):
        load_settings({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": servers})


def test_well_formed_bootstrap_servers_parse() -> None:
    text = "[::1]:9093,[::1],::1,k,k.example:19092,10.0.0.1:9092"
    assert parse_bootstrap_servers(text) == [
        ("::1", 9093),
        ("::1", 9092),
        ("::1", 9092),
        ("k", 9092),
        ("k.example", 19092),
        ("10.0.0.1", 9092),
    ]


def startup_cases(tmp: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Settings whose values parse but cannot work on this machine: id -> (env, named)."""
    a_file = tmp / "a-file"
    a_file.write_text("x")
    not_utf8 = tmp / "latin1.toml"
    not_utf8.write_bytes(b"# caf\xe9\n")
    not_toml = tmp / "broken.toml"
    not_toml.write_text("[sources\n")
    return {
        "data-dir-in-proc": ({"CAPTURE_DATA_DIR": "/proc/nope"}, "CAPTURE_DATA_DIR"),
        "data-dir-is-a-file": ({"CAPTURE_DATA_DIR": str(a_file)}, "CAPTURE_DATA_DIR"),
        "data-dir-log-is-a-dir": (
            {"CAPTURE_DATA_DIR": str(_dir_with_a_directory_as_log(tmp))},
            "CAPTURE_DATA_DIR",
        ),
        "host-unresolvable": ({"CAPTURE_HOST": "no-such-host.invalid"}, "CAPTURE_HOST"),
        "host-not-local": ({"CAPTURE_HOST": "192.0.2.1"}, "CAPTURE_HOST"),
        "memory-sink": ({"CAPTURE_SINK": "memory"}, "CAPTURE_SINK=memory"),
        "schemas-dir-missing": ({"CAPTURE_SCHEMAS_DIR": str(tmp / "none")}, "CAPTURE_SCHEMAS_DIR"),
        "schemas-dir-is-a-file": ({"CAPTURE_SCHEMAS_DIR": str(a_file)}, "CAPTURE_SCHEMAS_DIR"),
        "config-missing": ({"CAPTURE_CONFIG_FILE": str(tmp / "none.toml")}, "CAPTURE_CONFIG_FILE"),
        "config-not-utf8": ({"CAPTURE_CONFIG_FILE": str(not_utf8)}, "CAPTURE_CONFIG_FILE"),
        "config-not-toml": ({"CAPTURE_CONFIG_FILE": str(not_toml)}, "CAPTURE_CONFIG_FILE"),
        "template-makes-bad-topics": ({"CAPTURE_TOPIC_TEMPLATE": "ev {event}"}, "TOPIC_TEMPLATE"),
        "template-placeholder": ({"CAPTURE_TOPIC_TEMPLATE": "{user}"}, "CAPTURE_TOPIC_TEMPLATE"),
        "demo-bundle-missing": (
            {"CAPTURE_DEMO": "1", "CAPTURE_DEMO_BUNDLE": str(tmp / "none.js")},
            "CAPTURE_DEMO_BUNDLE",
        ),
    }


def _dir_with_a_directory_as_log(tmp: Path) -> Path:
    data = tmp / "data-with-bad-log"
    (data / "events.x.jsonl").mkdir(parents=True)
    return data


STARTUP_IDS = list(startup_cases(Path(tempfile.mkdtemp())))


@pytest.mark.parametrize("case", STARTUP_IDS)
def test_start_up_conditions_are_refused_in_one_line_exit_2(
    tmp_path: Path,
    case: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, named = startup_cases(tmp_path)[case]
    clean_environment(monkeypatch, {"CAPTURE_DATA_DIR": str(tmp_path / "data"), **env})
    monkeypatch.setattr(cli, "serve_one", must_not_serve)
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capture serve: ")
    assert err.count("\n") == 1, err
    assert named in err


def test_a_port_in_use_is_refused_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, {"CAPTURE_DATA_DIR": str(tmp_path)})
    monkeypatch.setattr(cli, "serve_one", must_not_serve)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "CAPTURE_PORT" in err
    assert "in use" in err


def test_a_port_taken_after_the_check_is_still_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, {"CAPTURE_DATA_DIR": str(tmp_path)})
    monkeypatch.setattr(startup, "check_startup", lambda settings: None)  # lose the race
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err  # the app's start-up warnings come first, then the line
    assert err.splitlines()[-1].startswith("capture serve: cannot start: ")
    assert "Traceback" not in err


def must_not_serve(settings: Settings, *, reuse_port: bool = False) -> int:
    raise AssertionError("start-up passed: the collector would serve now")


def test_every_setting_has_a_bad_value_under_test() -> None:
    named = {variable for _, variable in BAD_VALUES}
    named |= {variable for _, variable in startup_cases(Path(tempfile.mkdtemp())).values()}
    named |= {"CAPTURE_PORT", "CAPTURE_SINK", "CAPTURE_SINK=memory"}  # the tests above
    covered = {field for field in FIELDS if any(env_var(field) in n for n in named)}
    assert covered == set(FIELDS)


def clean_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for variable in [v for v in os.environ if v.startswith("CAPTURE_")]:
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)


CAPTURE = Path(sys.executable).parent / "capture"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CAPTURE_DATA_DIR": "/proc/nope"}, "CAPTURE_DATA_DIR"),
        ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "::::"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
        ({"CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "[::1"}, "CAPTURE_KAFKA_BOOTSTRAP_SERVERS"),
        ({"CAPTURE_DEAD_LETTER_TOPIC": "bad/topic"}, "CAPTURE_DEAD_LETTER_TOPIC"),
        ({"CAPTURE_DEAD_LETTER_TOPIC": "events.track_played"}, "CAPTURE_DEAD_LETTER_TOPIC"),
        ({"CAPTURE_TOPIC_PREFIX": "events/"}, "CAPTURE_TOPIC_PREFIX"),
        ({"CAPTURE_TOPIC_TEMPLATE": "ev {event}"}, "CAPTURE_TOPIC_TEMPLATE"),
        ({"CAPTURE_TOPIC_TEMPLATE": "{version}"}, "CAPTURE_TOPIC_TEMPLATE"),
        ({"CAPTURE_SINK": "memory"}, "CAPTURE_SINK"),
    ],
    ids=[
        "data-dir",
        "bootstrap-servers",
        "bootstrap-unclosed-bracket",
        "dead-letter-topic",
        "dead-letter-is-an-event-topic",
        "prefix",
        "template",
        "template-without-event",
        "memory",
    ],
)
def test_capture_serve_with_a_bad_setting_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")}
    command = [str(CAPTURE)] if CAPTURE.exists() else [sys.executable, "-m", "collector.cli"]
    result = subprocess.run(
        [*command, "serve", "--port", "0"],
        env={**base, "CAPTURE_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,  # a collector that started anyway would run until killed
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("capture serve: ")
    assert named in lines[0]
