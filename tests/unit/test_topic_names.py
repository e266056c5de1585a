"""Every topic the collector can write is checked by Kafka's rules before it serves (issue 12).

A bad name used to pass start-up and then fail every request with `500 sink_rejected` after
the request's other records were written (the SDK's retries then duplicated them). Settings,
templates, fan-out rules, `x-topic`, hot reload, the file sink and replay's flags all use
`event_schemas.topics.topic_error`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from collector import keys
from collector.app import create_app
from collector.cli import main
from collector.fanout import RoutingConfig, load_routing_config
from collector.reload import Plan, check_topics, reload_plan
from collector.routing import RouteTable, Topics
from collector.settings import Settings, SettingsError, load_settings
from collector.sinks.base import Outcome, Record
from collector.sinks.file import FileSink
from event_schemas import PLAN_DIR, SchemaLoadError, SchemaRegistry, load_registry
from event_schemas.topics import MAX_TOPIC_CHARS, topic_error, topic_prefix_error


@pytest.mark.parametrize(
    "name",
    ["events.track_played", "a", "A-Z_0.9", "..a", "x" * MAX_TOPIC_CHARS, "_invalid"],
)
def test_legal_topic_names(name: str) -> None:
    assert topic_error(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "cannot be a topic"),
        ("..", "cannot be a topic"),
        ("x" * (MAX_TOPIC_CHARS + 1), "at most 249"),
        ("bad/topic", "'/'"),
        ("ev play", "' '"),
        ("caf\u00e9", "'\u00e9'"),
        ("a:b", "':'"),
        ("a\nb", "'\\n'"),
    ],
)
def test_illegal_topic_names_say_why(name: str, why: str) -> None:
    problem = topic_error(name)
    assert problem is not None
    assert why in problem


def test_a_prefix_may_be_a_dot_but_must_leave_room_and_use_legal_characters() -> None:
    assert topic_prefix_error(".") is None
    assert topic_prefix_error("") is None
    assert topic_prefix_error("x" * (MAX_TOPIC_CHARS - 1)) is None
    assert topic_prefix_error("x" * MAX_TOPIC_CHARS) is not None
    assert topic_prefix_error("events/") is not None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CAPTURE_DEAD_LETTER_TOPIC": "bad/topic"}, "CAPTURE_DEAD_LETTER_TOPIC"),
        ({"CAPTURE_DEAD_LETTER_TOPIC": ".."}, "CAPTURE_DEAD_LETTER_TOPIC"),
        ({"CAPTURE_DEAD_LETTER_TOPIC": "d" * 250}, "CAPTURE_DEAD_LETTER_TOPIC"),
        ({"CAPTURE_TOPIC_PREFIX": "events/"}, "CAPTURE_TOPIC_PREFIX"),
        ({"CAPTURE_TOPIC_PREFIX": "p" * 249}, "CAPTURE_TOPIC_PREFIX"),
    ],
)
def test_topic_settings_are_refused_when_loaded(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (Settings(sink="memory", topic_template="ev {event}"), "CAPTURE_TOPIC_TEMPLATE"),
        (Settings(sink="memory", topic_template="a/{event}"), "CAPTURE_TOPIC_TEMPLATE"),
        # legal text, but too long for the plan's longer event names
        (Settings(sink="memory", topic_template="t" * 230 + ".{event}"), "CAPTURE_TOPIC_TEMPLATE"),
        (Settings(sink="memory", topic_prefix="p" * 235), "CAPTURE_TOPIC_PREFIX"),
        # built directly, past load_settings: the plan checks them again
        (Settings(sink="memory", topic_prefix="events/"), "CAPTURE_TOPIC_PREFIX"),
        (Settings(sink="memory", dead_letter_topic="bad/topic"), "CAPTURE_DEAD_LETTER_TOPIC"),
    ],
)
def test_the_app_refuses_a_plan_that_would_write_a_bad_topic(
    schemas: SchemaRegistry, settings: Settings, named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        create_app(settings, schemas=schemas)


def write_plan(directory: Path, x_topics: dict[str, str | None]) -> SchemaRegistry:
    """A plan of one-version events, each with its `x-topic` (None: none)."""
    for event, topic in x_topics.items():
        (directory / event).mkdir(parents=True)
        document: dict[str, object] = {"type": "object", "properties": {}}
        if topic is not None:
            document["x-topic"] = topic
        (directory / event / "v1.json").write_bytes(msgspec.json.encode(document))
    return load_registry(directory)


@pytest.mark.parametrize("template", ["{version}", "events", "e.{version}.v"])
def test_a_template_without_its_event_is_refused(schemas: SchemaRegistry, template: str) -> None:
    # every event would go to one topic (or one per version), mixed
    with pytest.raises(SettingsError, match=r"CAPTURE_TOPIC_TEMPLATE.*must contain \{event\}"):
        create_app(Settings(sink="memory", topic_template=template), schemas=schemas)


def test_a_template_that_sends_two_events_to_one_topic_is_refused(
    schemas: SchemaRegistry,
) -> None:
    # past build_plan's own check of the template text: check_topics sees what it makes
    table = RouteTable(Topics(template="{version}"), schemas, RoutingConfig())
    plan = Plan(schemas=schemas, routes=table, known_events=frozenset(schemas.events()))
    settings = Settings(sink="memory", topic_template="{version}")
    with pytest.raises(SettingsError, match=r"CAPTURE_TOPIC_TEMPLATE: it sends both \w+ and"):
        check_topics(plan, settings, RoutingConfig())


def test_the_dead_letter_topic_cannot_be_an_event_topic(schemas: SchemaRegistry) -> None:
    for settings in [
        Settings(sink="memory", dead_letter_topic="events.track_played"),
        Settings(sink="memory", topic_template="t.{event}", dead_letter_topic="t.track_played"),
    ]:
        with pytest.raises(SettingsError, match=r"CAPTURE_DEAD_LETTER_TOPIC.*track_played v1"):
            create_app(settings, schemas=schemas)


def test_the_dead_letter_topic_cannot_be_a_schema_x_topic(tmp_path: Path) -> None:
    schemas = write_plan(tmp_path / "plan", {"foo": "legacy", "bar": None})
    with pytest.raises(SettingsError, match=r"CAPTURE_DEAD_LETTER_TOPIC.*foo v1"):
        create_app(Settings(sink="memory", dead_letter_topic="legacy"), schemas=schemas)


def test_a_fanout_rule_cannot_copy_into_the_dead_letter_topic(
    schemas: SchemaRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[[routing.fanout]]\nevents = ["*"]\ntopic = "events._invalid"\n')
    with pytest.raises(SettingsError, match=r"fanout\[0\]\.topic: .* dead-letter topic"):
        create_app(Settings(sink="memory", config_file=str(path)), schemas=schemas)


def test_x_topic_and_fanout_rules_may_share_a_topic_on_purpose(tmp_path: Path) -> None:
    # the schema owner or the operator named the shared topic; the template did not make it
    schemas = write_plan(tmp_path / "plan", {"foo": "legacy", "bar": "legacy", "baz": None})
    path = tmp_path / "collector.toml"
    path.write_text('[[routing.fanout]]\nevents = ["*"]\ntopic = "all-events"\n')
    app = create_app(Settings(sink="memory", config_file=str(path)), schemas=schemas)
    routes = app[keys.PLAN].current.routes
    assert routes.route_for("foo", 1)[0] == routes.route_for("bar", 1)[0] == "legacy"
    assert routes.route_for("baz", 1)[3] == ("all-events",)


def test_what_a_template_yields_is_checked_for_every_event_and_version(
    schemas: SchemaRegistry,
) -> None:
    longest = max(len(event) for event in schemas.events())
    fits = "t" * (MAX_TOPIC_CHARS - longest - 1) + ".{event}"
    create_app(Settings(sink="memory", topic_template=fits), schemas=schemas)
    too_long = "t" + fits  # one character more: only the longest event names overflow
    with pytest.raises(SettingsError, match=r"CAPTURE_TOPIC_TEMPLATE: for \w+ v\d+"):
        create_app(Settings(sink="memory", topic_template=too_long), schemas=schemas)


@pytest.mark.parametrize("topic", ["bad/topic", "{event} copy", "x{version}" + "y" * 250, "."])
def test_fanout_rules_must_make_topic_names(
    schemas: SchemaRegistry, tmp_path: Path, topic: str
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(f'[[routing.fanout]]\nevents = ["*"]\ntopic = "{topic}"\n')
    with pytest.raises(SettingsError, match=r"\[routing\]\.fanout\[0\]\.topic") as raised:
        create_app(Settings(sink="memory", config_file=str(path)), schemas=schemas)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("topic", [".", "..", "a b", "t" * 250])
def test_a_schema_x_topic_must_be_a_topic_name(tmp_path: Path, topic: str) -> None:
    plan = tmp_path / "plan"
    (plan / "foo").mkdir(parents=True)
    document = {"type": "object", "properties": {}, "x-topic": topic}
    (plan / "foo" / "v1.json").write_bytes(msgspec.json.encode(document))
    with pytest.raises(SchemaLoadError, match="x-topic"):
        load_registry(plan)


async def test_reload_refuses_a_plan_whose_new_event_makes_a_bad_topic(tmp_path: Path) -> None:
    plan = tmp_path / "plan"
    shutil.copytree(PLAN_DIR, plan)
    schemas = load_registry(plan)
    longest = max(len(event) for event in schemas.events())
    template = "t" * (MAX_TOPIC_CHARS - longest - 1) + ".{event}"  # fits the plan as it is
    settings = Settings(sink="memory", schemas_dir=str(plan), topic_template=template)
    app = create_app(settings, schemas=schemas)
    before = app[keys.PLAN].current
    long_name = "e" * (longest + 1)
    (plan / long_name).mkdir()
    (plan / long_name / "v1.json").write_bytes(b'{"type": "object", "properties": {}}')
    assert await reload_plan(app) is False
    assert app[keys.PLAN].current is before  # the old plan keeps serving
    (plan / long_name / "v1.json").unlink()
    (plan / long_name).rmdir()
    assert await reload_plan(app) is True


async def test_the_file_sink_refuses_names_that_are_not_topics(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "data")
    await sink.start()
    try:
        topics = ["ok", ".", "..", "../escape", "a/b", "x" * 250, ""]
        records = [Record(topic, None, b"{}", [], 0) for topic in topics]
        outcomes = await sink.publish(records, timeout_s=5)
    finally:
        await sink.stop()
    assert outcomes == [Outcome.OK] + [Outcome.FATAL] * (len(topics) - 1)
    assert names(tmp_path) == ["data"]  # nothing written outside the data directory
    assert names(tmp_path / "data") == ["ok.jsonl"]


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--topic", "../etc"], "--topic"),
        (["--dead-letters", "--to-topic", "bad/topic"], "--to-topic"),
        (["--dead-letters", "--topic-prefix", "events/"], "CAPTURE_TOPIC_PREFIX"),
        (["--dead-letters", "--dead-letter-topic", "a b"], "CAPTURE_DEAD_LETTER_TOPIC"),
        (["--event", "track_played", "--topic-template", "x/{event}"], "CAPTURE_TOPIC_TEMPLATE"),
    ],
)
def test_replay_checks_its_topic_flags(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    named: str,
) -> None:
    for variable in ("CAPTURE_TOPIC_PREFIX", "CAPTURE_DEAD_LETTER_TOPIC", "CAPTURE_TOPIC_TEMPLATE"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["replay", "--data-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert list(tmp_path.iterdir()) == []  # nothing read or written


def test_a_fanout_rule_for_an_event_not_in_the_plan_yet_is_checked_too(tmp_path: Path) -> None:
    # otherwise the file loads today and the plan that adds the event is refused later
    path = tmp_path / "collector.toml"
    path.write_text('[[routing.fanout]]\nevents = ["future_event"]\ntopic = "a/{event}"\n')
    with pytest.raises(SettingsError, match=r"\[routing\]\.fanout\[0\]\.topic"):
        load_routing_config(str(path))
