"""The Spark engine: `capture replay --engine spark` and `capture archive`.

session.py starts Spark (and says what to install when it cannot), rows.py converts between
Arrow batches and replay's records, replay.py runs replay's own per-record rules
(collector.replay.runner) inside Spark tasks, archive.py streams every event topic into a
Parquet lake. Nothing here defines a selection, dedup, upgrade or recovery rule of its own.
Importing this package does not import pyspark; each module does when it is used.
"""
