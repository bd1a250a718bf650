"""Test-only: a `Delta` aggregated per metric row in Python, by the rules the stores
apply in SQL (the store suite holds both stores to it)."""

from __future__ import annotations

from consumer.fold import BY_CHANNEL, Delta
from consumer.fold.delta import RowKey, layout_of, row_keys
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.sketch import bin_of
from consumer.fold.windows import ALL, ALL_START
from consumer.store import MetricRow

#: where time to first assignment's bins lie in a row's bin space
TTFA_BASE = REGISTRY.metric("time_to_first_assignment").bin_base


class RowDelta:
    """Changes to one metric row since the last commit."""

    __slots__ = (
        "assignments", "bins", "closed_unread", "closed_window_expired", "closures", "created",
        "first_closes", "lag_count", "lag_max", "lag_sum", "recheck", "recheck_ttfa", "reopens",
        "snoozes", "ttc_count", "ttc_max", "ttc_min", "ttc_sum", "ttfa_count", "ttfa_max",
        "ttfa_min", "ttfa_sum",
    )  # fmt: skip

    def __init__(self) -> None:
        for m in REGISTRY.counters:  # closures, reopens, closed_unread, created, ...
            setattr(self, m.column, 0)
        self.ttc_count = self.ttfa_count = 0
        self.ttc_sum = self.ttfa_sum = 0
        self.ttc_min: int | None = None
        self.ttc_max: int | None = None
        self.ttfa_min: int | None = None
        self.ttfa_max: int | None = None
        #: a time to first assignment was retracted: min/max recomputed from first_assignments
        self.recheck_ttfa = False
        self.bins: dict[int, int] = {}
        #: a duration was retracted: min/max must be recomputed from the closures table
        self.recheck = False
        self.lag_count = 0  # ingest lag (receive time - event time), milliseconds
        self.lag_sum = 0
        self.lag_max: int | None = None

    def add_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count += 1
        self.ttc_sum += seconds
        if self.ttc_min is None or seconds < self.ttc_min:
            self.ttc_min = seconds
        if self.ttc_max is None or seconds > self.ttc_max:
            self.ttc_max = seconds
        self.bins[b] = self.bins.get(b, 0) + 1

    def add_lags(self, count: int, total: int, most: int, bins: dict[int, int]) -> None:
        self.lag_count += count
        self.lag_sum += total
        if self.lag_max is None or most > self.lag_max:
            self.lag_max = most
        for b, n in bins.items():
            self.bins[b] = self.bins.get(b, 0) + n

    def retract_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count -= 1
        self.ttc_sum -= seconds
        self.bins[b] = self.bins.get(b, 0) - 1
        self.recheck = True

    def add_ttfa(self, seconds: int, b: int) -> None:
        self.ttfa_count += 1
        self.ttfa_sum += seconds
        if self.ttfa_min is None or seconds < self.ttfa_min:
            self.ttfa_min = seconds
        if self.ttfa_max is None or seconds > self.ttfa_max:
            self.ttfa_max = seconds
        b += TTFA_BASE
        self.bins[b] = self.bins.get(b, 0) + 1

    def retract_ttfa(self, seconds: int, b: int) -> None:
        self.ttfa_count -= 1
        self.ttfa_sum -= seconds
        b += TTFA_BASE
        self.bins[b] = self.bins.get(b, 0) - 1
        self.recheck_ttfa = True


def served_keys(fact: tuple[object, ...], registry: Registry = REGISTRY) -> list[RowKey]:
    """The rows a fact counts in as the API serves them (`Registry.served`: a source's row
    as the rows derived from it)."""
    return [
        (served, served_key, win, start)
        for by, key, win, start in row_keys(fact, registry)
        for served, served_key in registry.served(by, win, key)
    ]


def delta_rows(delta: Delta, registry: Registry = REGISTRY) -> dict[RowKey, RowDelta]:
    """The facts aggregated per metric row as the API serves them (computed on each access)."""
    rows: dict[RowKey, RowDelta] = {}

    def row(key: RowKey) -> RowDelta:
        r = rows.get(key)
        if r is None:
            r = rows[key] = RowDelta()
        return r

    layout = layout_of(registry)
    counters = [(m.column, layout.position(m.name)) for m in registry.counters]
    ttc_at = layout.position("time_to_close")
    fa_at = layout.position("time_to_first_assignment") if "ttfa_n" in layout.fields else None
    for fact in delta.facts:
        ttc_n, ttc, b = fact[ttc_at : ttc_at + 3]
        fa_n, fa, fb = (0, None, None) if fa_at is None else fact[fa_at : fa_at + 3]
        for k in served_keys(fact, registry):
            r = row(k)
            for column, at in counters:
                setattr(r, column, getattr(r, column) + fact[at])
            if ttc_n > 0:
                r.add_ttc(ttc, b)  # type: ignore[arg-type]
            elif ttc_n < 0:
                r.retract_ttc(ttc, b)  # type: ignore[arg-type]
            if fa_n > 0:
                r.add_ttfa(fa, fb)  # type: ignore[arg-type]
            elif fa_n < 0:
                r.retract_ttfa(fa, fb)  # type: ignore[arg-type]
    for (ch, hour), (n, total, most, bins) in delta.lags.items():
        for k in lag_keys(ch, hour):
            row(k).add_lags(n, total, most, bins)
    return rows


def lag_keys(channel_type: str, t: int) -> list[RowKey]:
    """The rows an ingest lag counts in: the channel type's 1-hour, 1-day and all-time rows."""
    return [
        (BY_CHANNEL, channel_type, "1h", t - t % 3600),
        (BY_CHANNEL, channel_type, "1d", t - t % 86400),
        (BY_CHANNEL, channel_type, ALL, ALL_START),
    ]


def make_row(
    by: str, key: str, window: str, start: int, durations: tuple[int, ...] = (), **values: int | None
) -> MetricRow:
    """A merged MetricRow as a store returns it: the given column values (the rest 0 or
    None), time-to-close count/sum/min/max and bins from `durations`."""
    row: dict[str, int | None] = {
        c: None if c.endswith(("_min", "_max")) else 0 for c in REGISTRY.value_columns
    }
    bins: dict[int, int] = {}
    if durations:
        row |= {"ttc_count": len(durations), "ttc_sum": sum(durations)}
        row |= {"ttc_min": min(durations), "ttc_max": max(durations)}
        for d in durations:
            bins[bin_of(d)] = bins.get(bin_of(d), 0) + 1
    row |= values
    return MetricRow(by, key, window, start, row, tuple(sorted(bins.items())))
