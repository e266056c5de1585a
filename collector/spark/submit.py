"""The spark-submit entry point: `spark-submit collector/spark/submit.py replay|archive ...`.

The same flags as `capture replay --engine spark` and `capture archive`; the master and any
--conf come from spark-submit (a --master flag after the command still wins). Ship the
collector to the executors too: install the `event-capture[spark]` wheel on every node, or
pass it with `--py-files`. Nothing but argument forwarding here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from collector.cli import main as capture


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("replay", "archive"):
        print("usage: spark-submit submit.py replay|archive [flags]", file=sys.stderr)
        return 2
    command, *rest = argv
    if command == "replay" and "--engine" not in rest:
        rest = ["--engine", "spark", *rest]
    return capture([command, *rest])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
