"""The engine flags of `capture replay` (--engine, --master, --spark-conf); imports no Spark."""

from __future__ import annotations

import argparse


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    eng = p.add_argument_group("engine")
    eng.add_argument(
        "--engine",
        choices=("process", "spark"),
        default="process",
        help="process: this one process (default); spark: Spark tasks, --out is a directory",
    )
    eng.add_argument("--master", help="Spark master (default local[*]; spark://, yarn, k8s://)")
    eng.add_argument(
        "--spark-conf", action="append", default=[], metavar="K=V", help="a Spark setting"
    )
