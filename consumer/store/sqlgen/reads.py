"""The queries of metric rows: merged over partitions, listed, ranked, paged."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from consumer.fold.registry import REGISTRY, Registry
from consumer.store.sqlgen.derived import rows_of, source_bounds
from consumer.store.sqlgen.dialect import Dialect, merged_columns


def query(
    d: Dialect,
    by: str,
    window: str,
    where: str,
    registry: Registry = REGISTRY,
    metrics: Collection[str] | None = None,
) -> str:
    """A metrics query of a grouping's rows of a window (`rows_of`): merged over their partitions (and
    a derived grouping's over its source rows), in (start, key) order, with the columns of
    `metrics` (None: all)."""
    bins = _bins_union(d, registry, metrics)
    rows = rows_of(d, registry, by, window)
    return (
        f"SELECT key, start, {merged_columns(registry, metrics)}{bins} FROM {rows} "
        f"WHERE {where} GROUP BY start, key ORDER BY start, key LIMIT {d.mark}"
    )


def rank_value(registry: Registry, name: str) -> str:
    """The SQL of a `Registry.rankable` value over a row's partitions (a KeyError for
    anything else); shares and means are NULL where their divisor is 0."""

    def per(num: str, den: str) -> str:
        return f"CAST(sum({num}) AS DOUBLE PRECISION) / NULLIF(sum({den}), 0)"

    if name not in registry.rankable or name == "key":
        raise KeyError(name)
    if "/" in name:
        a, b = name.split("/")
        return per(registry.metric(a).column, registry.metric(b).column)
    if "." in name:
        metric, stat = name.split(".")
        c = registry.metric(metric).column
        if stat == "mean":
            return per(f"{c}_sum", f"{c}_count")
        return f"{'sum' if stat in ('count', 'sum') else stat}({c}_{stat})"
    return f"sum({registry.metric(name).column})"


def key_order(registry: Registry, grouping: str) -> str:
    """A grouping's keys in their natural order: numerically for one integer dimension."""
    g = registry.grouping(grouping)
    if len(g.dimensions) == 1 and registry.dimension(g.dimensions[0]).type is int:
        return "CAST(key AS BIGINT)"
    return "key"


def ranked(
    d: Dialect, registry: Registry, grouping: str, window: str, where: str, value: str, descending: bool
) -> str:
    """A page of rows ranked by a `Registry.rankable` value (ties: start, then key): their
    (key, start) in rank order, each with the count of all rows that match. NULL values
    (a share of nothing) rank below every number, as in the dashboard. Only the ranked value
    is merged over every matching row; the page's own values are read by `page` after it
    (a ranking of 10,000 accounts merged every metric's columns of all 10,000 before:
    ~4x the time, bench/results/query.md)."""
    keys = key_order(registry, grouping)
    if value == "key":
        order = f"{keys} {'DESC' if descending else 'ASC'}, start"
    else:
        nulls = "NULLS LAST" if descending else "NULLS FIRST"
        order = f"{rank_value(registry, value)} {'DESC' if descending else 'ASC'} {nulls}, start, {keys}"
    return (
        f"SELECT key, start, count(*) OVER () FROM {rows_of(d, registry, grouping, window)} "
        f"WHERE {where} GROUP BY start, key ORDER BY {order} LIMIT {d.mark} OFFSET {d.mark}"
    )


def page(
    d: Dialect,
    registry: Registry,
    by: str,
    window: str,
    starts: Collection[int],
    keys: Sequence[str],
    metrics: Collection[str] | None = None,
) -> tuple[str, list[Any]]:
    """The merged values of a page of rows (a `ranked` page) at these window starts
    (integers, written into the SQL) and keys, and the query's arguments. A store keeping
    its bins as a blob reads their union too (as `query`); the other reads them with
    `rows.bins_filter`. The primary key (by, win, start, key, ...) is a point per start and
    key (a derived grouping's: a range of its source's per start and account,
    `source_bounds`)."""
    bins = _bins_union(d, registry, metrics)
    bound, bound_args = source_bounds(d, registry, by, window, keys)
    rows = rows_of(d, registry, by, window)
    sql = (
        f"SELECT key, start, {merged_columns(registry, metrics)}{bins} FROM {rows} "
        f"WHERE by = {d.mark} AND win = {d.mark} AND {starts_in(starts)} AND {d.one_of('key')}"
        f"{' AND ' + bound if bound else ''} "
        "GROUP BY start, key"
    )
    return sql, bound_args


def _bins_union(d: Dialect, registry: Registry, metrics: Collection[str] | None) -> str:
    """The last column of a store keeping its bins as a blob: their union, or NULL where the
    metrics read have no distribution (merging the blobs is most of such a query's work)."""
    if not d.bins_blob:
        return ""
    return ", bins_union(bins)" if registry.sketched(metrics) else ", NULL"


def starts_in(starts: Collection[int]) -> str:
    """`start` one of these window starts, written into the SQL (integers: nothing to
    escape; a list the primary key seeks start by start); none: no row."""
    if not starts:
        return "0 = 1"
    return f"start IN ({', '.join(str(int(s)) for s in sorted(starts))})"
