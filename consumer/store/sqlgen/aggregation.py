"""A commit's facts into metric rows: staged in temporary tables, folded into per-minute
(partials: per-hour) rows of each grouping, and rolled up into each window."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.fold.delta import layout_of
from consumer.fold.registry import REGISTRY, Grouping, Kind, Metric, Registry
from consumer.store.sqlgen.dialect import ROW_KEY, Dialect, merge_of
from consumer.store.sqlgen.values import (
    fact_bins,
    fact_values,
    key_expr,
    no_values,
    on_conflict,
    present,
)


@dataclass(frozen=True)
class Source:
    """Where a distribution's values live one per event, by event time: a row's min/max
    is recomputed from there after a retraction (the stores' RECHECK)."""

    table: str
    time: str  # the column of the event time


#: the distributions whose values a late event retracts, by name
RECHECKED = {
    "time_to_close": Source("closures", "closed_at"),
    "time_to_first_assignment": Source("first_assignments", "assigned_at"),
}
#: the facts are staged per grouping in rows of this many seconds (partials: their own size)
STAGED = 60


def _type(registry: Registry, field: str, integer: str) -> str:
    """The SQL type of a fact field: a text dimension's is TEXT, the rest are integers."""
    for dim in registry.dimensions:
        if dim.name == field:
            return "TEXT" if dim.type is str else integer
    return integer


def staging(d: Dialect, registry: Registry = REGISTRY, *, facts: bool = True) -> list[str]:
    """Temporary tables: the commit's facts (`facts`: unless the store rolls them up
    itself), partials, and per-grouping minute rows."""
    n = d.integer
    on_commit = " ON COMMIT DELETE ROWS" if d.name == "postgresql" else ""
    layout = layout_of(registry)
    fact_cols = ", ".join(f"{f} {_type(registry, f, n)}" for f in layout.fields)
    out = (
        [f"CREATE TEMP TABLE IF NOT EXISTS cm_facts (part INTEGER, seq {n}, {fact_cols}){on_commit}"]
        if facts
        else []
    )
    bins_col = ", b BLOB" if d.bins_in_rows else ""
    for m in layout.partial_metrics:
        out.append(
            f"CREATE TEMP TABLE IF NOT EXISTS cm_partial_{m.column} (part INTEGER, seq {n}, "
            f"channel_type TEXT, h {n}, n {n}, s {n}, mx {n}{bins_col}){on_commit}"
        )
        if not d.bins_in_rows:
            out.append(
                f"CREATE TEMP TABLE IF NOT EXISTS cm_partial_{m.column}_bins (part INTEGER, "
                f"channel_type TEXT, h {n}, bin {n}, n {n}){on_commit}"
            )
    values = ", ".join(f"{c} {n}" for c in registry.value_columns)
    for g in registry.groupings:
        out.append(
            f"CREATE TEMP TABLE IF NOT EXISTS cm_g_{g.ident} (part INTEGER, seq {n}, k TEXT, m {n}, "
            f"src INTEGER, {values}{bins_col}){on_commit}"
        )
        if not d.bins_in_rows:
            out.append(
                f"CREATE TEMP TABLE IF NOT EXISTS cm_g_{g.ident}_bins (part INTEGER, k TEXT, m {n}, "
                f"src INTEGER, bin {n}, n {n}){on_commit}"
            )
    return out


def _partial_values(p: Metric, registry: Registry) -> str:
    out = []
    for m in registry.metrics:
        if m.kind is Kind.COUNTER:
            out.append("0")
        elif m is p:
            out.append(", ".join(("n, s, NULL, mx", *("0" for _ in m.bucket_columns))))
        else:
            out.append(no_values(m))
    return ", ".join(out)


def _sources(g: Grouping, window: str, registry: Registry, facts: bool) -> list[int]:
    """Which staged sources hold metrics that count in (grouping, window): 0 the facts
    (unless they are not staged), i + 1 the i-th partial metric."""
    layout = layout_of(registry)
    srcs = []
    if facts and any(m.counts_in(g.name, window) for m in layout.fact_metrics):
        srcs.append(0)
    srcs += [i + 1 for i, m in enumerate(layout.partial_metrics) if m.counts_in(g.name, window)]
    return srcs


def _rolled_values(g: Grouping, window: str, registry: Registry) -> str:
    out = []
    for m in registry.metrics:
        counts = m.counts_in(g.name, window)
        for c in m.columns:
            how = merge_of(c, registry)
            if not counts:
                out.append("0" if how == "sum" else "NULL")
            elif how == "sum":
                out.append(f"coalesce(sum({c}), 0)")
            else:
                out.append(f"{how}({c})")
    return ", ".join(out)


def aggregation(d: Dialect, registry: Registry = REGISTRY, *, facts: bool = True) -> list[str]:
    """The statements that add the staged facts and partials to metric_rows (and, without
    bins in the rows, metric_bins). `facts` False: only the partials' (the store rolls the
    facts up itself: consumer.store.sqlite.rollup)."""
    out: list[str] = []
    cols = ", ".join((*ROW_KEY, *registry.value_columns, "seq", *(("bins",) if d.bins_in_rows else ())))
    for g in registry.groupings:
        fbin, fn = fact_bins(registry, g)
        key = key_expr(g)
        if facts:
            bins = f", bins_pack({fbin}, {fn})" if d.bins_in_rows else ""
            out.append(
                f"INSERT INTO cm_g_{g.ident} SELECT part, max(seq), {key} AS k, "
                f"{d.floor('t', STAGED)} AS m, 0, {fact_values(g, registry)}{bins} FROM cm_facts "
                f"WHERE {present(g, registry)} GROUP BY part, k, m"
            )
        if facts and not d.bins_in_rows:
            out.append(
                f"INSERT INTO cm_g_{g.ident}_bins SELECT part, {key} AS k, {d.floor('t', STAGED)} AS m, 0, "
                f"{fbin} AS bin, sum({fn}) FROM cm_facts WHERE {fn} IS NOT NULL AND {present(g, registry)} "
                "GROUP BY part, k, m, bin"
            )
        for i, p in enumerate(layout_of(registry).partial_metrics):
            if p.groupings is not None and g.name not in p.groupings:
                continue
            pkey = key_expr(g)
            pb = ", b" if d.bins_in_rows else ""
            out.append(
                f"INSERT INTO cm_g_{g.ident} SELECT part, seq, {pkey}, h, {i + 1}, "
                f"{_partial_values(p, registry)}{pb} FROM cm_partial_{p.column}"
            )
            if not d.bins_in_rows:
                out.append(  # partials' bins are in the row's bin space already (lag_bin_of)
                    f"INSERT INTO cm_g_{g.ident}_bins SELECT part, {pkey}, h, {i + 1}, bin, n "
                    f"FROM cm_partial_{p.column}_bins"
                )
        for window, size in registry.windows.items():
            srcs = _sources(g, window, registry, facts) if g.keeps(window) else []
            if not srcs:
                continue
            s = d.floor("m", size)
            where = f"src IN ({', '.join(map(str, srcs))})"
            union = ", bins_union(b)" if d.bins_in_rows else ""
            if size == STAGED and len(srcs) == 1:  # the staged rows are this window's already
                values = ", ".join(
                    c if m.counts_in(g.name, window) else ("0" if merge_of(c, registry) == "sum" else "NULL")
                    for m in registry.metrics
                    for c in m.columns
                )
                out.append(
                    f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', m, k, part, "
                    f"{values}, seq{', b' if d.bins_in_rows else ''} FROM cm_g_{g.ident} "
                    f"WHERE {where}" + on_conflict(d, registry)
                )
            else:
                out.append(
                    f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', {s} AS s, k, "
                    f"part, {_rolled_values(g, window, registry)}, max(seq){union} FROM cm_g_{g.ident} "
                    f"WHERE {where} GROUP BY part, s, k ORDER BY part, s, k" + on_conflict(d, registry)
                )
            if not d.bins_in_rows:
                out.append(
                    f"INSERT INTO metric_bins AS b SELECT '{g.name}', '{window}', {s} AS s, k, part, bin, "
                    f"CAST(sum(n) AS BIGINT) FROM cm_g_{g.ident}_bins WHERE {where} GROUP BY part, s, k, bin "
                    "HAVING sum(n) <> 0 ORDER BY part, s, k, bin "
                    "ON CONFLICT (by, win, start, key, partition, bin) DO UPDATE SET n = b.n + excluded.n"
                )
    return out


def clear(d: Dialect, registry: Registry = REGISTRY, *, facts: bool = True) -> list[str]:
    """Empty the temporary tables (SQLite; PostgreSQL's empty themselves at commit)."""
    tables = [
        *(["cm_facts"] if facts else []),
        *(f"cm_partial_{m.column}" for m in layout_of(registry).partial_metrics),
    ]
    tables += [f"cm_g_{g.ident}" for g in registry.groupings]
    return [f"DELETE FROM temp.{t}" for t in tables]
