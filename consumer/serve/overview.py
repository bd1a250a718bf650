"""What the dashboard, `/metrics` and `convmetrics metrics --last` need beyond `/v1/closures`:
the newest window of each size, and all-time totals, from the `Store` interface alone."""

from __future__ import annotations

from typing import Any

from consumer.fold import BY_CHANNEL
from consumer.fold.registry import Kind, Registry
from consumer.fold.windows import ALL, SIZED
from consumer.serve.query import MAX_LIMIT
from consumer.store import MetricRow, Store
from consumer.store.render import row_json
from consumer.store.rows import merge_rows


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


def newest_windows(store: Store) -> dict[str, int | None]:
    """The newest window start of each size (1m, 1h, 1d) by channel type: one indexed
    `max(start)` per size."""
    return {name: store.newest_start(BY_CHANNEL, name) for name, _ in SIZED}


#: how many channel types `/metrics`, `/v1/summary` and the dashboard show by name; the rest
#: are summed under `OTHER` (a sender inventing names must not inflate them without bound)
MAX_LABEL_VALUES = 200
OTHER = "_other"


def top_channels(rows: list[MetricRow], limit: int, registry: Registry) -> tuple[list[MetricRow], int]:
    """The `limit` channel types with the most closures (ties by name), and the rest merged
    into one `_other` row after them; returns them and how many names were folded."""
    if len(rows) <= limit:
        return rows, 0
    ranked = sorted(rows, key=lambda r: (-(r.values["closures"] or 0), r.key))
    rest = ranked[limit:]
    return [*ranked[:limit], merge_rows(rest, OTHER, registry)], len(rest)


def channel_summary(store: Store, max_label_values: int = MAX_LABEL_VALUES) -> dict[str, Any]:
    """`GET /v1/summary`: newest windows, all-time rows by channel type (the busiest
    `max_label_values`, the rest under `_other`, and then `channel_types_folded`: how many
    names `_other` holds) and the totals over all of them."""
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
    shown, folded = top_channels(rows, max_label_values, registry)
    body: dict[str, Any] = {
        "newest": newest_windows(store),
        "totals": totals,
        "channel_types": [row_json(r, registry) for r in shown],
    }
    if folded:
        body["channel_types_folded"] = folded
    return body
