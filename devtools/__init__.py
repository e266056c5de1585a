"""Dev tools: real components started for tests, benchmarks and people (not shipped in wheels).

Nothing here is imported by `capture_sdk`, `collector` or `event_schemas`.
"""
