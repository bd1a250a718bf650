"""A metric row as JSON: the shape `/v1/closures`, the metrics topic and the reports share."""

from __future__ import annotations

from typing import Any

from consumer.fold.windows import window_bounds
from consumer.store.base import MetricRow


def _clamp(q: float, lo: int | None, hi: int | None) -> float:
    if lo is not None and q < lo:
        return float(lo)
    if hi is not None and q > hi:
        return float(hi)
    return q


def row_json(row: MetricRow) -> dict[str, Any]:
    start, end = window_bounds(row.window, row.window_start)
    count = row.ttc_count
    qs = row.quantiles if count else None
    p50, p90, p99 = (_clamp(q, row.ttc_min, row.ttc_max) for q in qs) if qs else (None, None, None)
    return {
        "key": row.key,
        "window_start": start,
        "window_end": end,
        "closures": row.closures,
        "reopens": row.reopens,
        "closed_unread": row.closed_unread,
        "time_to_close": {
            "count": count,
            "sum": row.ttc_sum,
            "min": row.ttc_min if count else None,
            "max": row.ttc_max if count else None,
            "mean": row.ttc_sum / count if count else None,
            "p50": p50,
            "p90": p90,
            "p99": p99,
        },
        "ingest_lag": _lag_json(row),
    }


def _lag_json(row: MetricRow) -> dict[str, Any]:
    """Gateway receive time minus event time, in seconds (channel-type rows; v2 records)."""
    n = row.lag_count
    qs = row.lag_quantiles if n else None
    p50, p90, p99 = (min(q, row.lag_max or 0) / 1000 for q in qs) if qs else (None, None, None)
    return {
        "count": n,
        "mean": row.lag_sum / n / 1000 if n else None,
        "max": row.lag_max / 1000 if n and row.lag_max is not None else None,
        "p50": p50,
        "p90": p90,
        "p99": p99,
    }
