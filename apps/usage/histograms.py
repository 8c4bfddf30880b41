"""Latency histograms with fixed buckets: how the usage rollups keep time to first token and end-to-end latency so
that percentiles over any range come from merged rows, never from the raw records.

A histogram is a list of counts, one per bucket: bucket `i` holds the values in (BOUNDS_MS[i - 1], BOUNDS_MS[i]]
(the first from 0, the last above the highest bound). Two histograms merge by adding their counts element by element;
a shorter list (an empty one, as rows written before histograms existed hold) reads as zeros beyond its end. A
percentile is estimated as Prometheus' `histogram_quantile` does: find the bucket holding the rank, interpolate
linearly inside it; in the open last bucket, the highest bound is the answer (nothing is known above it).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

# Upper bounds in milliseconds: fine where time to first token lives (tens to hundreds of ms), coarser towards the
# minutes a long generation takes. Changing them invalidates every stored histogram: add a new column instead.
BOUNDS_MS: tuple[float, ...] = (
    10, 25, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500,
    10_000, 15_000, 30_000, 60_000, 120_000,
)  # fmt: skip
BUCKETS = len(BOUNDS_MS) + 1


def histogram_bucket(value_ms: float) -> int:
    """The index of the bucket that counts `value_ms` (negative values count in the first)."""
    return bisect_left(BOUNDS_MS, value_ms)


def histogram_of(values_ms: Iterable[float]) -> list[int]:
    """The histogram of some values."""
    counts = [0] * BUCKETS
    for value in values_ms:
        counts[histogram_bucket(value)] += 1
    return counts


def histogram_merge(*histograms: Sequence[int]) -> list[int]:
    """The element-wise sum of histograms of any lengths up to BUCKETS (what PostgreSQL's upsert does too)."""
    merged = [0] * BUCKETS
    for histogram in histograms:
        for index, count in enumerate(histogram[:BUCKETS]):
            merged[index] += int(count or 0)
    return merged


def histogram_percentile(histogram: Sequence[int], q: float) -> float | None:
    """The `q`-quantile (0 < q <= 1) of the values counted in `histogram`, in ms; None when it counts nothing."""
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    counts = histogram_merge(histogram)
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(BOUNDS_MS):
                return float(BOUNDS_MS[-1])
            lower = float(BOUNDS_MS[index - 1]) if index else 0.0
            upper = float(BOUNDS_MS[index])
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(BOUNDS_MS[-1])  # unreachable: the ranks end in the last non-empty bucket


def histogram_count_sql(column: str, condition: str = "TRUE") -> str:
    """SQL building the histogram of `column` over a group's rows (for backfills and seeds): one `count(*) FILTER`
    per bucket, in an ARRAY. `column` and `condition` are SQL written by the caller, never user input."""
    parts = []
    lower: float | None = None
    for upper in [*BOUNDS_MS, None]:
        where = [condition, f"{column} IS NOT NULL"]
        if lower is not None:
            where.append(f"{column} > {lower:g}")
        if upper is not None:
            where.append(f"{column} <= {upper:g}")
        parts.append(f"count(*) FILTER (WHERE {' AND '.join(where)})")
        lower = upper
    return "ARRAY[" + ", ".join(parts) + "]::int[]"


def histogram_sum_sql(column: str) -> str:
    """SQL adding up a histogram column over a group's rows, element by element (missing elements count 0)."""
    return "ARRAY[" + ", ".join(f"coalesce(sum({column}[{i}]), 0)" for i in range(1, BUCKETS + 1)) + "]::int[]"


def histogram_add_sql(left: str, right: str) -> str:
    """SQL adding two histogram values element by element, in order (for an upsert's `col = col + EXCLUDED.col`)."""
    return (
        f"ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) FROM unnest({left}, {right}) WITH ORDINALITY AS h(a, b, n) "  # noqa: S608
        "ORDER BY n)"
    )


__all__ = [
    "BOUNDS_MS",
    "BUCKETS",
    "histogram_add_sql",
    "histogram_bucket",
    "histogram_count_sql",
    "histogram_merge",
    "histogram_of",
    "histogram_percentile",
    "histogram_sum_sql",
]
