"""An oracle for the stores' rollup of a commit's facts (consumer.store.rollup): the same
rows computed in SQL (SQLite, its bins functions registered), as the stores once did in
production: the facts staged in a temporary table, folded into per-minute rows of each
grouping, and rolled up into each window with the metric rows' own upsert
(`sqlgen.on_conflict`). Written from the registry's declarations, independently of the
rollup's plan."""

from __future__ import annotations

from consumer.fold.delta import layout_of
from consumer.fold.registry import Grouping, Kind, Metric, Registry
from consumer.store import sqlgen

SQLITE = sqlgen.SQLITE
#: the facts are staged per grouping in rows of this many seconds
STAGED = 60


def _floor(col: str, size: int | None) -> str:
    """`col` floored to its window's start (SQLite's `%` truncates towards 0); 0 for all time."""
    if size is None:
        return "0"
    return f"({col} - (({col} % {size}) + {size}) % {size})"


def staging(registry: Registry) -> list[str]:
    """Temporary tables: the facts, and per-grouping minute rows."""
    fields = ", ".join(
        f"{f} {'TEXT' if any(d.name == f and d.type is str for d in registry.dimensions) else 'INTEGER'}"
        for f in layout_of(registry).fields
    )
    out = [f"CREATE TEMP TABLE IF NOT EXISTS cm_facts (part INTEGER, seq INTEGER, {fields})"]
    values = ", ".join(f"{c} INTEGER" for c in registry.value_columns)
    for g in registry.stored:
        out.append(
            f"CREATE TEMP TABLE IF NOT EXISTS cm_g_{g.ident} (part INTEGER, seq INTEGER, k TEXT, "
            f"m INTEGER, {values}, b BLOB)"
        )
    return out


def aggregation(registry: Registry) -> list[str]:
    """The statements that add the staged facts to metric_rows."""
    out: list[str] = []
    cols = ", ".join((*sqlgen.ROW_KEY, *registry.value_columns, "seq", "bins"))
    facts = layout_of(registry).fact_metrics
    for g in registry.stored:
        fbin, fn = _fact_bins(registry, g)
        out.append(
            f"INSERT INTO cm_g_{g.ident} SELECT part, max(seq), {_key(g)} AS k, "
            f"{_floor('t', STAGED)} AS m, {_fact_values(g, registry)}, bins_pack({fbin}, {fn}) "
            f"FROM cm_facts WHERE {_present(g, registry)} GROUP BY part, k, m"
        )
        for window, size in registry.windows.items():
            if not registry.stores(g, window) or not any(m.counts_in(g.name, window) for m in facts):
                continue
            out.append(
                f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', "
                f"{_floor('m', size)} AS s, k, part, {_rolled_values(g, window, registry)}, "
                f"max(seq), bins_union(b) FROM cm_g_{g.ident} GROUP BY part, s, k ORDER BY part, s, k"
                + sqlgen.on_conflict(SQLITE, registry)
            )
    return out


def _key(g: Grouping) -> str:
    """A row's key: the dimensions' values joined by `|` (a source's missing one empty)."""
    return " || '|' || ".join(f"coalesce(CAST({dim} AS TEXT), '')" for dim in g.dimensions)


def _present(g: Grouping, registry: Registry) -> str:
    """The facts a grouping counts: those with a value for each of its optional dimensions
    (a source's: all of them, `Registry.sources`)."""
    if registry.is_source(g.name):
        return "true"
    optional = [d for d in g.dimensions if registry.dimension(d).optional]
    return " AND ".join(f"{d} IS NOT NULL" for d in optional) or "true"


def _fact_values(g: Grouping, registry: Registry) -> str:
    """A grouping's row values from the staged facts, summed over a GROUP BY."""
    facts = layout_of(registry).fact_metrics
    out = []
    for m in registry.metrics:
        counts = m in facts and m.in_grouping(g.name)
        if m.kind is Kind.COUNTER:
            out.append(f"sum({m.column})" if counts else "0")
        elif counts:
            c, cn = m.column, f"{m.column}_n"
            value = f"CASE WHEN {cn} > 0 THEN {c} END"
            out += [f"sum({cn})", f"coalesce(sum({cn} * {c}), 0)", f"min({value})", f"max({value})"]
            out += [f"coalesce(sum({b}), 0)" for b in _bucket_increments(m)]
        else:
            out.append(_no_values(m))
    return ", ".join(out)


def _no_values(m: Metric) -> str:
    """A distribution's columns holding nothing."""
    return ", ".join(("0", "0", "NULL", "NULL", *("0" for _ in m.bucket_columns)))


def _bucket_increments(m: Metric) -> list[str]:
    """Each bucket's increment by one fact: its signed count where its value falls in the
    bucket (a retraction takes it back from the bucket of its old value)."""
    c, cn = m.column, f"{m.column}_n"
    out = []
    for _, _, lower, upper in m.bucket_columns:
        within = [
            f"{c} > {lower}" if lower is not None else "",
            f"{c} <= {upper}" if upper is not None else "",
        ]
        out.append(f"CASE WHEN {' AND '.join(w for w in within if w)} THEN {cn} ELSE 0 END")
    return out


def _fact_bins(registry: Registry, g: Grouping) -> tuple[str, str]:
    """(bin, n) of a fact's distribution value (a fact carries at most one), in the row's
    bin space, of the distributions that count in the grouping (NULL, NULL: none does)."""
    dists = layout_of(registry).distributions_in(g.name)
    if not dists:
        return "NULL", "NULL"
    bins = [f"CASE WHEN {m.column}_n <> 0 THEN {m.column}_bin + {m.bin_base} END" for m in dists]
    ns = [f"CASE WHEN {m.column}_n <> 0 THEN {m.column}_n END" for m in dists]
    if len(dists) == 1:
        return bins[0], ns[0]
    return f"coalesce({', '.join(bins)})", f"coalesce({', '.join(ns)})"


def _rolled_values(g: Grouping, window: str, registry: Registry) -> str:
    out = []
    for m in registry.metrics:
        counts = m.counts_in(g.name, window) and m in layout_of(registry).fact_metrics
        for c in m.columns:
            how = sqlgen.merge_of(c, registry)
            if not counts:
                out.append("0" if how == "sum" else "NULL")
            elif how == "sum":
                out.append(f"coalesce(sum({c}), 0)")
            else:
                out.append(f"{how}({c})")
    return ", ".join(out)
