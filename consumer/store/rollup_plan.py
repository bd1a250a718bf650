"""The plans of the rollup (consumer.store.rollup): data made from the registry, what the
rollup reads to turn facts into metric rows. Per grouping and window (a `Target`): where
the key's dimensions sit in a fact, which must be present, what each value column takes
from a fact (`Op`), and where a fact's distribution value and bin are. Three plans: the
facts' (`plan_of`), the gauges' changes' (`gauge_plan`) and the ingest-lag partials'
(`lag_plan`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache

from consumer.fold.delta import GAUGE_KEY, layout_of
from consumer.fold.registry import Kind, Metric, Registry
from consumer.fold.windows import ALL


class Op(IntEnum):
    """What a value column takes from the facts of its row (`a`, `b`: fact positions of a
    distribution's sign and value, or `a` a counter's)."""

    ZERO = 0  # a metric that does not count in this grouping or window
    NULL = 1  # its min or max
    SUM = 2  # sum of fact[a]
    SUM_PRODUCT = 3  # sum of fact[a] * fact[b]: a distribution's sum (sign x value)
    MIN = 4  # min of fact[b] over facts with fact[a] > 0 (a retraction leaves min/max alone)
    MAX = 5
    BUCKET = 6  # sum of fact[a] where lo < fact[b] <= hi (None: unbounded)


Column = tuple[int, int, int, int | None, int | None]  # (op, a, b, lo, hi)


@dataclass(frozen=True)
class Target:
    """The rows of one grouping and window."""

    by: str
    win: str
    size: int  # the window's length in seconds; 0: all time (start 0)
    key: tuple[int, ...]  # fact positions of the key's dimensions, joined by '|'
    present: tuple[int, ...]  # fact positions that must hold a value (optional dimensions)
    columns: tuple[Column, ...]  # one per value column, in registry order
    bins: tuple[tuple[int, int, int], ...]  # (sign, bin, bin_base) positions of the distributions
    may_miss: tuple[int, ...] = ()  # key positions whose missing value is empty text (a source's)


@dataclass(frozen=True)
class Plan:
    width: int  # a fact's fields
    t: int  # where a fact's event time is
    targets: tuple[Target, ...]


@cache
def plan_of(registry: Registry) -> Plan:
    """Every grouping's windows, their values from the metrics the facts carry (partial
    metrics, such as ingest lag, are rolled up from their own partials: `lag_plan`)."""
    layout = layout_of(registry)
    at = layout.fields.index
    facts = set(layout.fact_metrics)
    targets = []
    for g in registry.stored:
        key = tuple(at(d) for d in g.dimensions)
        optional = tuple(at(d) for d in g.dimensions if registry.dimension(d).optional)
        # a source keeps a fact without an optional value (empty in its key): the groupings
        # derived from it leave out what lacks theirs (`Registry.sources`)
        source = registry.is_source(g.name)
        present, may_miss = ((), optional) if source else (optional, ())
        for win, size in registry.windows.items():
            counting = [m for m in registry.metrics if m in facts and m.counts_in(g.name, win)]
            if not registry.stores(g, win) or not counting:
                continue
            columns: list[Column] = []
            for m in registry.metrics:
                if m not in counting:
                    columns += _nothing(m)
                elif m.kind is Kind.COUNTER:
                    columns.append((Op.SUM, at(m.column), 0, None, None))
                else:
                    n, v = at(f"{m.column}_n"), at(m.column)
                    columns += [
                        (Op.SUM, n, 0, None, None),
                        (Op.SUM_PRODUCT, n, v, None, None),
                        (Op.MIN, n, v, None, None),
                        (Op.MAX, n, v, None, None),
                    ]
                    columns += [(Op.BUCKET, n, v, lo, hi) for _, _, lo, hi in m.bucket_columns]
            dists = tuple(
                (at(f"{m.column}_n"), at(f"{m.column}_bin"), m.bin_base)
                for m in layout.distributions_in(g.name)
            )
            targets.append(Target(g.name, win, size or 0, key, present, tuple(columns), dists, may_miss))
    return Plan(len(layout.fields), layout.fields.index("t"), tuple(targets))


def _nothing(m: Metric) -> list[Column]:
    """The columns of a metric that does not count in a row: zero, a distribution's min and
    max NULL."""
    nothing = [Op.ZERO] * len(m.columns)
    if m.kind is Kind.DISTRIBUTION:
        nothing[2:4] = [Op.NULL, Op.NULL]
    return [(op, 0, 0, None, None) for op in nothing]


@cache
def gauge_plan(registry: Registry) -> Plan:
    """The gauges' changes (`gauge_changes`) rolled up as the backlog keeps them: one
    all-time row per (grouping, key), each gauge summed, as `consumer.fold.delta.gauge_rows`
    (the reference) keys them: a change whose key lacks one of a grouping's dimensions (no
    inbox) counts in no row of that grouping."""
    t = len(GAUGE_KEY)  # a change's "time": 0, all its rows are all-time rows
    values = tuple((Op.SUM, t + 1 + i, 0, None, None) for i in range(len(registry.gauges)))
    targets = []
    for g in registry.groupings:
        key = tuple(GAUGE_KEY.index(d) for d in g.dimensions)
        targets.append(Target(g.name, ALL, 0, key, key, values, ()))
    return Plan(t + 1 + len(registry.gauges), t, tuple(targets))


#: a lag fact's fields (`lag_facts`): its channel type and hour, then (count, sum, max) of a
#: partial, or one of its bins as (n, bin)
LAG_FIELDS = ("channel_type", "t", "n", "sum", "max", "bin_n", "bin")


@cache
def lag_plan(registry: Registry) -> Plan | None:
    """The ingest-lag partials (`consumer.fold.delta.Lags`, the registry's one partial
    metric) rolled up as `lag_facts` lays them out: count and sum summed, max the greatest
    (min is not kept: the metric's `exact_min` is False), bins summed (already in the row's
    bin space), in each grouping and window it counts in; None where the registry has no
    partial metric."""
    partial = layout_of(registry).partial_metrics
    if not partial:
        return None
    (lag,) = partial  # the fold keeps one partial metric (Delta.lags)
    at = LAG_FIELDS.index
    targets = []
    for g in registry.stored:
        if not lag.in_grouping(g.name):
            continue
        if g.dimensions != ("channel_type",):
            raise ValueError(f"ingest lag is kept per channel type: it cannot count in grouping {g.name}")
        for win, size in registry.windows.items():
            if not (registry.stores(g, win) and lag.counts_in(g.name, win)):
                continue
            columns: list[Column] = []
            for m in registry.metrics:
                if m is lag:
                    columns += [
                        (Op.SUM, at("n"), 0, None, None),
                        (Op.SUM, at("sum"), 0, None, None),
                        (Op.NULL, 0, 0, None, None),
                        (Op.MAX, at("n"), at("max"), None, None),
                    ]
                    columns += [(Op.ZERO, 0, 0, None, None)] * len(m.bucket_columns)
                else:
                    columns += _nothing(m)
            key = (at("channel_type"),)
            bins = ((at("bin_n"), at("bin"), 0),)
            targets.append(Target(g.name, win, size or 0, key, (), tuple(columns), bins))
    return Plan(len(LAG_FIELDS), at("t"), tuple(targets))
