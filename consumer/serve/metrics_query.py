"""Parsing and shaping of `/v1/metrics` (pure: parameters in, JSON-ready dicts out).

`/v1/metrics` shows every metric of the registry for any of its groupings; a row's key is
an object of the grouping's dimensions (`{"account": 42, "channel_type": "TELEGRAM"}`).
Filters name dimensions (`account=42`); on a grouping of several dimensions they select
the keys with that value (a key range for the first dimension, the key's end for the last).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumer.exceptions import QueryError
from consumer.fold.registry import METRIC_SETS, REGISTRY, Grouping, Kind, Registry
from consumer.fold.windows import WINDOWS
from consumer.serve.query import (
    DEFAULT_LIMIT,
    MAX_NAME,
    as_id,
    decode_cursor,
    encode_cursor,
    given,
    parse_span,
)
from consumer.store import MetricRow
from consumer.store.render import row_json


@dataclass(frozen=True)
class MetricsQuery:
    group: Grouping
    window: str
    #: values of some of the group's dimensions, by name, as text
    filters: Mapping[str, str]
    start_from: int | None = None
    start_to: int | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[int, str] | None = None

    @property
    def key(self) -> str | None:
        """The one key every dimension's filter names, if they all have one."""
        dims = self.group.dimensions
        if all(d in self.filters for d in dims):
            return "|".join(self.filters[d] for d in dims)
        return None

    @property
    def parts(self) -> dict[int, str] | None:
        """The filters as key parts (`consumer.store.base.row_filter`), when not one key."""
        if self.key is not None or not self.filters:
            return None
        dims = self.group.dimensions
        return {0 if dims.index(d) == 0 else -1: v for d, v in self.filters.items()}


def parse_metrics_query(params: Mapping[str, str], registry: Registry = REGISTRY) -> MetricsQuery:
    """Validate `/v1/metrics` parameters; QueryError names the bad one and why."""
    dims = [d.name for d in registry.dimensions]
    known = {"group", "window", "from", "to", "limit", "cursor", *dims}
    if unknown := sorted(set(params) - known):
        raise QueryError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    names = [g.name for g in registry.groupings]
    asked = params.get("group", "")
    try:
        if asked not in names:  # a source (`Registry.sources`) is stored, not served
            raise KeyError(asked)
        group = registry.grouping(asked)
    except KeyError:
        if asked in {g.name for g in REGISTRY.groupings}:  # another metric set's
            raise QueryError(
                f"group={asked}: this store counts by {', '.join(names)} (--metric-set)"
            ) from None
        raise QueryError(f"group must be one of {' | '.join(names)}: {given(params, 'group')}") from None
    window = params.get("window", "")
    kept = [w for w in WINDOWS if group.keeps(w)]
    if window not in kept:
        raise QueryError(
            f"window must be one of {', '.join(kept)} for group={group.name}: {given(params, 'window')}"
        )
    filters: dict[str, str] = {}
    for d in dims:
        value = params.get(d)
        if value is None or value == "":
            continue
        if d not in group.dimensions:
            has = ", ".join(group.dimensions)
            raise QueryError(f"{d} filters only a grouping that has it: group={group.name} has {has}")
        if registry.dimension(d).type is int:
            stored = as_id(value)
            if stored is None:
                raise QueryError(f"{d} must be an integer id, got {value!r}")
            value = stored
        elif len(value) > MAX_NAME:  # a text dimension comes last in its key: it may hold a '|'
            raise QueryError(f"{d} must be a name of at most {MAX_NAME} characters, got {value!r}")
        filters[d] = value
    if len(group.dimensions) > 2 and len(filters) not in (0, len(group.dimensions)):
        raise QueryError(f"group={group.name}: filter on all of {', '.join(group.dimensions)} or none")
    start_from, start_to, limit = parse_span(params, window)
    cursor = params.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    return MetricsQuery(group, window, filters, start_from, start_to, limit, after)


#: why a store without gauges has no backlog (`GET /v1/backlog` answers 404 with it)
NO_GAUGES = "this store's metric set folds no gauges: run the consumer with --metric-set full"


def parse_backlog_query(params: Mapping[str, str], registry: Registry = REGISTRY) -> MetricsQuery:
    """Validate `/v1/backlog` parameters (a grouping and filters on its dimensions, as
    `/v1/metrics` takes them, without window or paging); QueryError names the bad one."""
    dims = [d.name for d in registry.dimensions]
    known = {"group", *dims}
    if unknown := sorted(set(params) - known):
        raise QueryError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return parse_metrics_query({**params, "window": "all"}, registry)


def backlog_json(
    q: MetricsQuery, as_of: int | None, rows: list[tuple[str, int, int, int]], registry: Registry = REGISTRY
) -> dict[str, Any]:
    """`/v1/backlog`'s body: each key's gauges (`Registry.gauges`) and the newest event time seen."""
    names = [g.name for g in registry.gauges]
    out = []
    for key, *values in rows:
        item: dict[str, Any] = {"key": key_json(q.group, key, registry)}
        item.update(zip(names, values, strict=True))
        out.append(item)
    return {"group": q.group.name, "as_of": as_of, "rows": out}


def key_json(group: Grouping, key: str, registry: Registry = REGISTRY) -> dict[str, Any]:
    """A stored key as an object of its dimensions, typed as declared."""
    return dict(zip(group.dimensions, registry.key_values(group.name, key), strict=True))


def metrics_json(q: MetricsQuery, rows: list[MetricRow], registry: Registry = REGISTRY) -> dict[str, Any]:
    """The response body; `rows` holds up to limit+1 rows (the extra one means: more).
    Each row shows the metrics that count in its grouping and window."""
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    shown = tuple(m for m in registry.metrics if m.counts_in(q.group.name, q.window))
    out = []
    for r in rows:
        j = row_json(r, registry, shown)
        j["key"] = key_json(q.group, r.key, registry)
        out.append(j)
    nxt = encode_cursor(rows[-1].window_start, rows[-1].key) if more and rows else None
    return {"group": q.group.name, "window": q.window, "next": nxt, "rows": out}


def _set_name(registry: Registry) -> str | None:
    """The name of the set a registry is (`--sla-buckets` changes bounds, not the set)."""
    shape = ([m.name for m in registry.metrics], registry.groupings)
    return next(
        (n for n, r in METRIC_SETS.items() if ([m.name for m in r.metrics], r.groupings) == shape), None
    )


def metric_set_json(registry: Registry) -> dict[str, Any]:
    """`GET /v1/metric-set`: what the store's metric set holds, for clients that draw every
    metric without naming one (the dashboard): its name (`--metric-set`), its groupings with
    their dimensions and windows, and its metrics with where each counts. Windows and
    groupings are spelled out (never null); a distribution lists the statistics its JSON
    has (and its buckets' names, where it has buckets), and durations are in seconds as the
    rows show them."""
    windows = list(registry.windows)
    groupings = [g.name for g in registry.groupings]
    metrics = []
    for m in registry.metrics:
        item: dict[str, Any] = {
            "name": m.name,
            "kind": str(m.kind),
            "unit": "s" if m.unit == "ms" and m.scale == 1000 else m.unit,
            "description": m.description,
            "groupings": [g for g in groupings if m.in_grouping(g)],
            "windows": [w for w in windows if m.windows is None or w in m.windows],
        }
        if m.kind is Kind.DISTRIBUTION:
            exact = ("count", "sum", "min", "max", "mean")
            item["stats"] = [*(exact if m.exact_min else ("count", "mean", "max")), "p50", "p90", "p99"]
            if m.buckets:
                item["buckets"] = [name for name, *_ in m.bucket_columns]
        metrics.append(item)
    return {
        "name": _set_name(registry),
        "gauges": [{"name": g.name, "description": g.description} for g in registry.gauges],
        "groupings": [
            {"name": g.name, "dimensions": list(g.dimensions), "windows": [w for w in windows if g.keeps(w)]}
            for g in registry.groupings
        ],
        "metrics": metrics,
    }
