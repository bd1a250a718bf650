"""SQL expressions of a metric row's values, for the statements that aggregate a commit's
staged facts (`aggregation`)."""

from __future__ import annotations

from consumer.fold.delta import layout_of
from consumer.fold.registry import Grouping, Kind, Metric, Registry
from consumer.store.sqlgen.dialect import ROW_KEY, Dialect, merge_of


def key_expr(g: Grouping, prefix: str = "") -> str:
    parts = [f"CAST({prefix}{dim} AS TEXT)" for dim in g.dimensions]
    return parts[0] if len(parts) == 1 else " || '|' || ".join(parts)


def present(g: Grouping, registry: Registry) -> str:
    """The facts a grouping counts: those with a value for each of its optional dimensions."""
    optional = [d for d in g.dimensions if registry.dimension(d).optional]
    return " AND ".join(f"{d} IS NOT NULL" for d in optional) or "true"


def fact_values(g: Grouping, registry: Registry) -> str:
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
            out += [f"coalesce(sum({b}), 0)" for b in bucket_increments(m)]
        else:
            out.append(no_values(m))
    return ", ".join(out)


def no_values(m: Metric) -> str:
    """A distribution's columns holding nothing."""
    return ", ".join(("0", "0", "NULL", "NULL", *("0" for _ in m.bucket_columns)))


def bucket_increments(m: Metric) -> list[str]:
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


def fact_bins(registry: Registry, g: Grouping) -> tuple[str, str]:
    """(bin, n) of a fact's distribution value (a fact carries at most one), in the row's
    bin space (shifted by the metric's bin_base), of the distributions that count in the
    grouping `g` (NULL, NULL: none does)."""
    dists = layout_of(registry).distributions_in(g.name)
    if not dists:
        return "NULL", "NULL"
    bins = [f"CASE WHEN {m.column}_n <> 0 THEN {m.column}_bin + {m.bin_base} END" for m in dists]
    ns = [f"CASE WHEN {m.column}_n <> 0 THEN {m.column}_n END" for m in dists]
    if len(dists) == 1:
        return bins[0], ns[0]
    return f"coalesce({', '.join(bins)})", f"coalesce({', '.join(ns)})"


def on_conflict(d: Dialect, registry: Registry) -> str:
    sets = ["seq = excluded.seq"]
    for c in registry.value_columns:
        how = merge_of(c, registry)
        if how == "sum":
            sets.append(f"{c} = r.{c} + excluded.{c}")
        elif how == "min":
            sets.append(f"{c} = {d.least(f'r.{c}', f'excluded.{c}')}")
        else:
            sets.append(f"{c} = {d.greatest(f'r.{c}', f'excluded.{c}')}")
    if d.bins_in_rows:
        sets.append("bins = bins_merge(r.bins, excluded.bins)")
    return f" ON CONFLICT ({', '.join(ROW_KEY)}) DO UPDATE SET " + ", ".join(sets)
