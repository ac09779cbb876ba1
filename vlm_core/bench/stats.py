"""Summary statistics of benchmark rounds, standard library only (no torch), so that scripts
timing fresh processes (benchmarks/cold_start.py) use the same figures as the in-process
benches."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float | int]:
    """What a benchmark reports beside a median: the median, the quartiles (inclusive method),
    the extremes and how many values there are, rounded to ``digits`` decimals."""
    if not values:
        raise ValueError("spread of no values")
    ordered = sorted(values)
    q1, _, q3 = (
        statistics.quantiles(ordered, n=4, method="inclusive")
        if len(ordered) > 1
        else (ordered[0],) * 3
    )
    return {
        "median": round(statistics.median(ordered), digits),
        "q1": round(q1, digits),
        "q3": round(q3, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }
