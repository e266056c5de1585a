"""Benchmarks for the ingest path: `make bench` runs them all in one process tree, in one go.

Everything here measures; nothing here is imported by the SDK, the collector or the tests.
"""
