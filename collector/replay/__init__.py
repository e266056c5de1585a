"""Replay: read topics (Kafka or the file sink's log) back into files or topics.

One more driver of the collector's own sinks and stages, not a second pipeline: sources.py
reads, select.py filters, transform.py dedups/upgrades/recovers, outputs.py writes,
runner.py counts, cli.py wires `capture replay`. Nothing here serves HTTP.
"""

from collector.replay.cli import add_parser, run
from collector.replay.runner import Plan, run_replay
from collector.replay.summary import Summary

__all__ = ["Plan", "Summary", "add_parser", "run", "run_replay"]
