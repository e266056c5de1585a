"""Small numeric helpers shared by the stages: percentiles and a least-squares slope.

Pure functions over numbers already measured; must not measure anything themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of an already sorted sequence; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(q / 100 * len(sorted_values))
    return float(sorted_values[min(len(sorted_values), max(1, rank)) - 1])


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs; 0.0 with fewer than two distinct xs."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for reports (NaN stays NaN)."""
    return seconds if math.isnan(seconds) else round(seconds * 1000, 3)
