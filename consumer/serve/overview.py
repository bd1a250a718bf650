"""What the dashboard, `/metrics` and `convmetrics metrics --last` need beyond `/v1/closures`:
the newest window of each size, and all-time totals. Built on `Store.query` alone, so any
store implementation serves them."""

from __future__ import annotations

import threading
from typing import Any

from consumer.fold import BY_CHANNEL
from consumer.fold.registry import Kind
from consumer.fold.windows import ALL, SIZED
from consumer.serve.query import MAX_LIMIT
from consumer.store import MetricRow, Store
from consumer.store.render import row_json


def all_rows(store: Store, by: str, window: str, *, start_from: int | None = None) -> list[MetricRow]:
    """Every row of (by, window) from `start_from` on, page by page."""
    rows: list[MetricRow] = []
    after: tuple[int, str] | None = None
    while True:
        page = store.query(by, window, start_from=start_from, after=after, limit=MAX_LIMIT)
        rows.extend(page)
        if len(page) < MAX_LIMIT:
            return rows
        after = (page[-1].window_start, page[-1].key)


class NewestWindows:
    """The newest window start of each size (1m, 1h, 1d), found top-down.

    Every event updates a row of each size (by channel type and by account alike), so the
    newest 1-minute window lies in the newest hour, which lies in the newest day: three
    small queries instead of a scan of the 1-minute rows. The newest day only moves
    forward while the store lives, so it is remembered as a lower bound for the next call;
    thread-safe (one instance serves every API worker thread).
    """

    def __init__(self) -> None:
        self._day_hint: int | None = None
        self._lock = threading.Lock()

    def find(self, store: Store) -> dict[str, int | None]:
        with self._lock:
            hint = self._day_hint
        newest: dict[str, int | None] = {name: None for name, _ in SIZED}
        days = all_rows(store, BY_CHANNEL, "1d", start_from=hint)
        if not days and hint is not None:  # the store was replaced or purged: start over
            days = all_rows(store, BY_CHANNEL, "1d")
        if not days:
            return newest
        start = newest["1d"] = max(r.window_start for r in days)
        with self._lock:
            self._day_hint = start
        for name, _ in SIZED[1::-1]:  # 1h, then 1m, each within the newest larger window
            rows = all_rows(store, BY_CHANNEL, name, start_from=start)
            if not rows and name == "1m":  # the newest hour may hold ingest lag only: look back
                rows = all_rows(store, BY_CHANNEL, name, start_from=start - 2 * 86400)
            if not rows:  # retention already dropped that size: nothing newer to find
                break
            start = newest[name] = max(r.window_start for r in rows)
        return newest


def channel_summary(store: Store, newest: NewestWindows) -> dict[str, Any]:
    """`GET /v1/summary`: newest windows, all-time rows by channel type and their totals."""
    rows = all_rows(store, BY_CHANNEL, ALL)
    totals: dict[str, Any] = {}
    registry = store.registry
    for m in registry.metrics:  # counters, and the exact distributions' count, sum and mean
        if m.kind is Kind.COUNTER:
            totals[m.name] = sum(r.values[m.column] or 0 for r in rows)
        elif m.kind is Kind.DISTRIBUTION and m.exact_min:
            count = sum(r.values[f"{m.column}_count"] or 0 for r in rows)
            total = sum(r.values[f"{m.column}_sum"] or 0 for r in rows)
            totals |= {f"{m.column}_count": count, f"{m.column}_sum": total}
            totals[f"{m.column}_mean"] = total / count if count else None
    return {
        "newest": newest.find(store),
        "totals": totals,
        "channel_types": [row_json(r, registry) for r in rows],
    }
