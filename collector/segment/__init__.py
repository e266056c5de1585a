"""Segment-compatible ingestion: Segment's HTTP tracking API under `/compat/segment`.

A translator in front of the native pipeline, not a second pipeline: see mapping.py for how
messages become events and handlers.py for the routes.
"""

from collector.segment.config import SegmentConfig, build_segment_config
from collector.segment.handlers import PREFIX, add_routes

__all__ = ["PREFIX", "SegmentConfig", "add_routes", "build_segment_config"]
