"""A metric row as JSON: the shape `/v1/closures`, the metrics topic and the reports share,
built from the registry (a counter is a number; a distribution an object of its stats)."""

from __future__ import annotations

from typing import Any

from consumer.fold.registry import REGISTRY, Kind, Metric, Registry
from consumer.fold.windows import window_bounds
from consumer.store.base import MetricRow


def _clamp(q: float, lo: int | None, hi: int | None) -> float:
    if lo is not None and q < lo:
        return float(lo)
    if hi is not None and q > hi:
        return float(hi)
    return q


def distribution_json(row: MetricRow, m: Metric) -> dict[str, Any]:
    """count, sum, min, max, mean (exact) and p50, p90, p99 (sketch, clamped into the exact
    range); null statistics when the count is 0. A distribution without `exact_min` shows
    count, mean, max and quantiles (clamped to the max), divided by its `scale`. A
    distribution with buckets (`Metric.buckets`) adds `buckets`: {"le_1h": n, ...}."""
    c = m.column
    count = row.values[f"{c}_count"] or 0
    total = row.values[f"{c}_sum"] or 0
    lo, hi = row.values[f"{c}_min"], row.values[f"{c}_max"]
    qs = row.quantiles(m) if count else None
    if m.exact_min:
        p50, p90, p99 = (_clamp(q, lo, hi) for q in qs) if qs else (None, None, None)
        out: dict[str, Any] = {
            "count": count,
            "sum": total,
            "min": lo if count else None,
            "max": hi if count else None,
            "mean": total / count if count else None,
            "p50": p50,
            "p90": p90,
            "p99": p99,
        }
        if m.buckets:  # exact counts of disjoint buckets by value (`Metric.buckets`)
            out["buckets"] = {name: row.values[col] or 0 for name, col, _, _ in m.bucket_columns}
        return out
    s = m.scale
    p50, p90, p99 = (min(q, hi or 0) / s for q in qs) if qs else (None, None, None)
    return {
        "count": count,
        "mean": total / count / s if count else None,
        "max": hi / s if count and hi is not None else None,
        "p50": p50,
        "p90": p90,
        "p99": p99,
    }


def row_json(
    row: MetricRow, registry: Registry = REGISTRY, metrics: tuple[Metric, ...] | None = None
) -> dict[str, Any]:
    """The row's key, window bounds and its metrics' values (`metrics`: these, else all)."""
    start, end = window_bounds(row.window, row.window_start)
    out: dict[str, Any] = {"key": row.key, "window_start": start, "window_end": end}
    for m in registry.metrics if metrics is None else metrics:
        if m.kind is Kind.COUNTER:
            out[m.name] = row.values[m.column]
        elif m.kind is Kind.DISTRIBUTION:
            out[m.name] = distribution_json(row, m)
    return out
