"""A fine-grained grouping's rows (`Grouping.fine`: many keys, such as accounts): its short
windows take one upsert per fact, its longer ones are grouped from the facts."""

from __future__ import annotations

from consumer.fold.delta import layout_of
from consumer.fold.registry import Grouping, Registry
from consumer.store.sqlgen.dialect import Dialect
from consumer.store.sqlgen.values import (
    fact_bins,
    fact_values,
    key_expr,
    on_conflict,
    present,
)

#: windows whose rows a fine-grained grouping's facts each have to themselves, nearly
PER_FACT_WINDOWS = ("1m", "1h")


def fine_upserts(d: Dialect, g: Grouping, registry: Registry, cols: str) -> list[str]:
    """A fine-grained grouping (`Grouping.fine`, no partials, `Dialect.per_fact_upserts`):
    its short windows' rows take one upsert per fact straight from the facts, its longer
    ones are grouped from the facts: no per-minute staging, which would sort every fact
    for little merging."""
    fbin, fn = fact_bins(registry)
    key = key_expr(g)
    out = []
    for window, size in registry.windows.items():
        if not g.keeps(window) or not any(
            m.counts_in(g.name, window) for m in layout_of(registry).fact_metrics
        ):
            continue
        s = d.floor("t", size)
        if window in PER_FACT_WINDOWS:
            values = fact_values(g, registry, window)
            out.append(
                f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', {s}, {key}, part, "
                f"{values}, seq, bins_one({fbin}, {fn}) FROM cm_facts WHERE {present(g, registry)}"
                + on_conflict(d, registry)
            )
        else:
            values = fact_values(g, registry)
            out.append(
                f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', {s} AS s, {key} AS k, "
                f"part, {values}, max(seq), bins_pack({fbin}, {fn}) FROM cm_facts "
                f"WHERE {present(g, registry)} GROUP BY part, s, k" + on_conflict(d, registry)
            )
    return out
