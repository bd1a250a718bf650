"""The registry's vocabulary: a metric (its kind, unit, storage), a dimension, a grouping,
and a `Registry` of them that checks itself. What is declared with it: `declared`."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Final

from consumer.fold.sketch import LAG_BASE
from consumer.fold.windows import WINDOWS

#: half the bin space of one distribution: bin indexes lie within +-BIN_SPAN of its bin_base
BIN_SPAN: Final = LAG_BASE // 2


SlaBound = tuple[str, int]
"""A bucket's upper bound: (its label as given, `1h`; seconds, 3600)"""


class Kind(StrEnum):
    COUNTER = "counter"
    DISTRIBUTION = "distribution"
    GAUGE = "gauge"


@dataclass(frozen=True)
class Metric:
    """One metric.

    Args:
        name: its name in JSON, Prometheus and the registry (snake_case).
        kind: counter, distribution or gauge.
        unit: "1" for counts, "s" or "ms" for durations.
        description: one sentence, for `/metrics` HELP, the docs and `--help`.
        column: the store's column (counter) or column prefix (distribution).
        groupings: the groupings it counts in (None: every one).
        windows: the windows it counts in (None: every one).
        bin_base: where its sketch bins start in a row's bin space (distributions).
        scale: JSON shows values divided by this (1000: milliseconds shown as seconds).
        exact_min: JSON shows the exact min and sum and clamps quantiles into [min, max];
            without it (ingest lag, whose minimum is not kept) quantiles are clamped to the
            max only and JSON shows count, mean, max and quantiles.
        partial_size: the fold pre-aggregates it per dimensions and this many seconds of
            event time (a `Delta` partial) instead of emitting a fact per event.
        counts: a counter that counts events of these types (distinct event ids) needs no
            rule of its own in the fold: both folds count it from this declaration.
        when: ... and only those for which this named condition of `CONDITIONS` holds.
        rule: a counter with a rule of its own in both folds, named in `RULES` (it may
            retract: `first_closes` takes back an old first close when an earlier one arrives).
        buckets: a distribution's values also counted in disjoint, exact buckets by these
            upper bounds (`SlaBound`s, ascending; a last bucket takes what is above them):
            columns `<column>_le_<label>` and `<column>_gt_<last label>`, summed by the
            stores from the facts' values (a retraction moves a value between buckets).
    """

    name: str
    kind: Kind
    unit: str
    description: str
    column: str = ""
    groupings: tuple[str, ...] | None = None
    windows: tuple[str, ...] | None = None
    bin_base: int = 0
    scale: int = 1
    exact_min: bool = True
    partial_size: int | None = None
    counts: tuple[str, ...] = ()
    when: str | None = None
    rule: str | None = None
    buckets: tuple[SlaBound, ...] = ()

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.name)

    @property
    def columns(self) -> tuple[str, ...]:
        """The store's columns of this metric, in order."""
        if self.kind is Kind.DISTRIBUTION:
            c = self.column
            return (f"{c}_count", f"{c}_sum", f"{c}_min", f"{c}_max", *(b[1] for b in self.bucket_columns))
        return (self.column,)

    @property
    def bucket_columns(self) -> tuple[tuple[str, str, int | None, int | None], ...]:
        """(JSON name, column, lower bound exclusive, upper bound inclusive) of each bucket
        (`buckets`): `le_1h` holds values <= 3600, `le_4h` those in (3600, 14400], ...,
        `gt_24h` those above 86400 (bounds None: open)."""
        if not self.buckets:
            return ()
        out: list[tuple[str, str, int | None, int | None]] = []
        lower: int | None = None
        for label, upper in self.buckets:
            out.append((f"le_{label}", f"{self.column}_le_{label}", lower, upper))
            lower = upper
        last = self.buckets[-1][0]
        out.append((f"gt_{last}", f"{self.column}_gt_{last}", lower, None))
        return tuple(out)

    def owns_bin(self, b: int) -> bool:
        """Whether a bin index of a row's bin space is this distribution's."""
        return self.bin_base - BIN_SPAN <= b < self.bin_base + BIN_SPAN

    def in_grouping(self, grouping: str) -> bool:
        """Whether it counts in that grouping's rows (of some window)."""
        return self.groupings is None or grouping in self.groupings

    def counts_in(self, grouping: str, window: str) -> bool:
        """Whether it counts in that grouping's rows of that window (if the grouping keeps
        them: `Grouping.keeps`)."""
        return self.in_grouping(grouping) and (self.windows is None or window in self.windows)


@dataclass(frozen=True)
class Dimension:
    """A field of the event that metrics are grouped by. An event without a value for a
    dimension (`inbox`: a conversation without `data.channel`) counts in no grouping that
    names it."""

    name: str
    type: type[int] | type[str]
    #: events may lack it (NULL in facts and closures)
    optional: bool = False


@dataclass(frozen=True)
class Grouping:
    """A declared tuple of dimensions; a row's key is its values, as text (one dimension:
    the value itself, `42` or `TELEGRAM`, several: joined by `|`)."""

    name: str
    dimensions: tuple[str, ...]
    #: the windows it keeps rows of (None: every one)
    windows: tuple[str, ...] | None = None
    #: stored as the rows of this finer grouping (`Registry.sources`), read by projecting
    #: their keys onto its dimensions and merging them (as rows merge over partitions):
    #: exact, and a commit writes one finer row where it wrote one per derived grouping
    #: (docs/performance.md). None: it has rows of its own.
    derived_from: str | None = None
    #: the windows read from `derived_from` (None: every one it keeps); in the others it
    #: has rows of its own (`account` keeps its all-time rows, which a ranking of every
    #: account reads, and derives the rest)
    derived_windows: tuple[str, ...] | None = None
    #: the names its rows were stored under by releases before (a store's `by` column):
    #: a store of an older format has them renamed at open (`consumer.store.upgrade.rename`)
    formerly: tuple[str, ...] = ()

    def keeps(self, window: str) -> bool:
        return self.windows is None or window in self.windows

    def derives(self, window: str) -> bool:
        """Whether its rows of this window are read from its source's (`derived_from`)."""
        return self.derived_from is not None and (
            self.derived_windows is None or window in self.derived_windows
        )

    @property
    def ident(self) -> str:
        """The name as an SQL identifier's part (`account,channel_type` -> `account_channel_type`)."""
        return self.name.replace(",", "_")


@dataclass(frozen=True)
class Registry:
    metrics: tuple[Metric, ...]
    dimensions: tuple[Dimension, ...]
    groupings: tuple[Grouping, ...]
    windows: Mapping[str, int | None] = field(default_factory=lambda: dict(WINDOWS), hash=False)
    #: the metrics `/v1/closures` (and the v1 `closure_metrics` records) show, None: all;
    #: `/v1/metrics` shows every one
    closures_view: tuple[str, ...] | None = None
    #: the live gauges (`Kind.GAUGE`: not windowed, not in metric rows), counted over the
    #: conversations the consumer remembers, by every grouping (`GET /v1/backlog`; the
    #: stores' `backlog` table). Empty: the set folds none (`closures`).
    gauges: tuple[Metric, ...] = ()
    #: groupings stored and never served: the rows derived groupings (`Grouping.derived_from`)
    #: are read from. Their keys keep an optional dimension's missing value as empty text
    #: (`42||7|TELEGRAM`: no inbox), so that they hold every event the derived ones count.
    sources: tuple[Grouping, ...] = ()
    #: whether this set's folds write the sources' rows. False: a set whose folds keep no
    #: inbox or app (`closures`) writes its derived groupings' rows as their own in every
    #: window, and reads the sources' rows beside them, which a set that folds them (`full`)
    #: wrote into the same store (a store switched between the sets loses no rows)
    folds_sources: bool = True

    def __post_init__(self) -> None:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique: {names}")
        dims = {d.name for d in self.dimensions}
        for g in (*self.groupings, *self.sources):
            if missing := set(g.dimensions) - dims:
                raise ValueError(f"grouping {g.name!r} names undeclared dimensions {sorted(missing)}")
            if set(g.windows or ()) - set(self.windows):
                raise ValueError(f"grouping {g.name!r} names an undeclared window")
            texts = [d.name for d in self.dimensions if d.name in g.dimensions and d.type is str]
            if len(texts) > 1:  # `key_parts` could not tell where one ends when they hold a '|'
                raise ValueError(f"grouping {g.name!r}: at most one text dimension, not {texts}")
            if texts and g.dimensions[-1] != texts[0]:  # the stores' key filters read it so
                raise ValueError(f"grouping {g.name!r}: its text dimension {texts[0]!r} comes last")
        self._check_derived()
        for m in self.metrics:
            if m.when is not None and m.when not in CONDITIONS:
                known = sorted(CONDITIONS)
                raise ValueError(f"metric {m.name!r}: unknown condition {m.when!r}; known: {known}")
            if m.rule is not None and m.rule not in RULES:
                raise ValueError(f"metric {m.name!r}: unknown rule {m.rule!r}; known: {sorted(RULES)}")
            unknown = set(m.groupings or ()) - {g.name for g in self.groupings}
            if unknown or set(m.windows or ()) - set(self.windows):
                raise ValueError(f"metric {m.name!r} names an undeclared grouping or window")
        if self.closures_view is not None and (extra := set(self.closures_view) - set(names)):
            raise ValueError(f"closures_view names undeclared metrics {sorted(extra)}")
        misplaced = [m.name for m in self.metrics if m.kind is Kind.GAUGE]
        misplaced += [g.name for g in self.gauges if g.kind is not Kind.GAUGE]
        if misplaced:
            raise ValueError("gauges are declared in Registry.gauges, and only gauges there")
        if tuple(g.name for g in self.gauges) not in ((), GAUGE_NAMES):
            raise ValueError(f"the folds count the gauges {GAUGE_NAMES}, all of them in that order, or none")
        if self.gauges and TTFA not in {m.column for m in self.metrics}:
            # a conversation "has an assigned event" when it keeps one (time to first
            # assignment's state, consumer.fold.reference)
            raise ValueError("the gauges need time_to_first_assignment folded (its conversation state)")

    def _check_derived(self) -> None:
        """A derived grouping's source is one of `sources`, with all its dimensions and
        every window it keeps; a metric counts in both or in neither; every source has a
        grouping derived from it."""
        names = {g.name for g in (*self.groupings, *self.sources)}
        if len(names) != len(self.groupings) + len(self.sources):
            raise ValueError("grouping names must be unique")
        formerly: set[str] = set()
        for g in (*self.groupings, *self.sources):
            if reused := names.intersection(g.formerly):  # its rows would be renamed into another's
                raise ValueError(f"grouping {g.name!r}: formerly {sorted(reused)}, a grouping's name today")
            if twice := formerly.intersection(g.formerly):
                raise ValueError(
                    f"grouping {g.name!r}: formerly {sorted(twice)}, another grouping's former name"
                )
            formerly.update(g.formerly)
        sources = {s.name: s for s in self.sources}
        for g in self.groupings:
            if g.derived_from is None:
                if g.derived_windows is not None:
                    raise ValueError(f"grouping {g.name!r}: derived_windows without derived_from")
                continue
            if set(g.derived_windows or ()) - set(self.windows):
                raise ValueError(f"grouping {g.name!r}: derived_windows names an undeclared window")
            src = sources.get(g.derived_from)
            if src is None:
                raise ValueError(
                    f"grouping {g.name!r}: its source {g.derived_from!r} is not one of `sources`"
                )
            if set(g.dimensions) - set(src.dimensions):
                raise ValueError(f"grouping {g.name!r} has dimensions its source {src.name!r} lacks")
            if src.windows is not None and not set(self.derived_in(g)) <= set(src.windows):
                raise ValueError(f"grouping {g.name!r} keeps windows its source {src.name!r} does not")
            for m in self.metrics:
                if m.in_grouping(g.name) != m.in_grouping(src.name):
                    raise ValueError(f"metric {m.name!r} counts in {g.name!r} or its source, not both")
        if unused := {s.name for s in self.sources} - {g.derived_from for g in self.groupings}:
            raise ValueError(f"sources no grouping is derived from: {sorted(unused)}")

    @property
    def stored(self) -> tuple[Grouping, ...]:
        """The groupings this set's commits write rows of: those with rows of their own in
        some window (`stores`), and the sources where it folds them."""
        own = (g for g in self.groupings if any(self.stores(g, w) for w in self.windows))
        return (*own, *(self.sources if self.folds_sources else ()))

    def derived_in(self, g: Grouping) -> tuple[str, ...]:
        """The windows a grouping keeps and reads from its source (`Grouping.derives`)."""
        return tuple(w for w in self.windows if g.keeps(w) and g.derives(w))

    def stores(self, g: Grouping, window: str) -> bool:
        """Whether commits write rows of a grouping's own in this window: it keeps the
        window and does not derive it from a source this set folds."""
        return g.keeps(window) and not (g.derives(window) and self.folds_sources)

    def is_source(self, grouping: str) -> bool:
        return any(s.name == grouping for s in self.sources)

    @cached_property
    def closures_shown(self) -> tuple[Metric, ...]:
        """What `/v1/closures` shows of each row: `closures_view`'s metrics as they always
        were (time to close without its buckets, which `/v1/metrics` shows)."""
        return tuple(
            dataclasses.replace(m, buckets=()) if m.buckets else m for m in self.view(self.closures_view)
        )

    def view(self, names: tuple[str, ...] | None) -> tuple[Metric, ...]:
        """The metrics named (all when None), in registry order."""
        return self.metrics if names is None else tuple(m for m in self.metrics if m.name in names)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    def grouping(self, name: str) -> Grouping:
        """A grouping by name, served or a source."""
        for g in (*self.groupings, *self.sources):
            if g.name == name:
                return g
        raise KeyError(name)

    def key_parts(self, grouping: str, key: str) -> list[str]:
        """A stored row key's values, one per dimension of its grouping, as text: the
        inverse of joining them with '|'. An integer holds no '|' and a grouping has at most
        one text dimension, so a text value (a channel type another producer named
        `WEB|CHAT`) keeps every '|' it has: the integers before it are split off the left,
        those after it off the right."""
        dims = self.grouping(grouping).dimensions
        if len(dims) == 1:
            return [key]
        text = [i for i, d in enumerate(dims) if self.dimension(d).type is str]
        if not text:
            parts = key.split("|")
        else:
            t = text[0]
            *left, rest = key.split("|", t)
            parts = [*left, *rest.rsplit("|", len(dims) - t - 1)]
        if len(parts) != len(dims):
            raise ValueError(f"key {key!r} of grouping {grouping!r} does not have {len(dims)} parts")
        return parts

    def key_values(self, grouping: str, key: str) -> list[int | str | None]:
        """`key_parts`, each typed as its dimension is declared (a source's missing value:
        None)."""
        dims = self.grouping(grouping).dimensions
        return [
            None if not v and self.dimension(d).optional else int(v) if self.dimension(d).type is int else v
            for d, v in zip(dims, self.key_parts(grouping, key), strict=True)
        ]

    def project(self, grouping: str, key: str) -> str | None:
        """A source's row key (`sources`) as the key of a grouping derived from it, None
        where the row counts in none of its rows (its inbox or app missing)."""
        g = self.grouping(grouping)
        assert g.derived_from is not None
        src = self.grouping(g.derived_from)
        parts = dict(zip(src.dimensions, self.key_parts(src.name, key), strict=True))
        values = [parts[d] for d in g.dimensions]
        if any(not v and self.dimension(d).optional for d, v in zip(g.dimensions, values, strict=True)):
            return None
        return "|".join(values)

    def served(self, grouping: str, window: str, key: str) -> list[tuple[str, str]]:
        """A stored row's (grouping, key) as the API serves it: itself, or a source's row
        (`sources`, never served) as the row of each grouping that derives the window from
        it and counts it (a source row without an inbox is in no inbox row)."""
        grouping = self.current(grouping)
        if not self.is_source(grouping):
            return [(grouping, key)]
        return [
            (g.name, projected)
            for g in self.derived(grouping)
            if g.keeps(window) and g.derives(window) and (projected := self.project(g.name, key)) is not None
        ]

    def current(self, name: str) -> str:
        """A grouping's name today, given it or a former one (`Grouping.formerly`: a row a
        release before wrote, such as a purged row's key waiting for its tombstone)."""
        return self._names_today.get(name, name)

    @cached_property
    def _names_today(self) -> dict[str, str]:
        """Former name -> name today (`served` asks for every row a metrics topic publishes)."""
        return {old: g.name for g in (*self.groupings, *self.sources) for old in g.formerly}

    def derived(self, source: str) -> tuple[Grouping, ...]:
        """The groupings derived from a source."""
        return tuple(g for g in self.groupings if g.derived_from == source)

    @property
    def groups_by_inbox_or_app(self) -> bool:
        """Whether a grouping names `inbox` or `app`: else folds keep neither (shorter
        conversation states, NULL in facts)."""
        return any(d in (INBOX, APP) for g in self.groupings for d in g.dimensions)

    @property
    def counters(self) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.kind is Kind.COUNTER)

    @property
    def distributions(self) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.kind is Kind.DISTRIBUTION)

    @property
    def rankable(self) -> tuple[str, ...]:
        """What rows can be ranked by (`/v1/closures?sort=`): `key`; each counter; each
        counter per another (`closed_unread/closures`, a share); each distribution's exact
        `count`, `sum`, `min`, `max` and `mean` (`time_to_close.mean`). Quantiles are not:
        ranking by one would read every row's sketch."""
        counters = [m.name for m in self.counters]
        stats = [
            f"{m.name}.{s}"
            for m in self.distributions
            for s in (RANK_STATS if m.exact_min else ("count", "max", "mean"))
        ]
        ratios = [f"{a}/{b}" for a in counters for b in counters if a != b]
        return ("key", *counters, *ratios, *stats)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """Every metric's columns, in registry order."""
        return tuple(c for m in self.metrics for c in m.columns)

    def sketched(self, metrics: Collection[str] | None) -> bool:
        """Whether the named metrics (None: all) need a row's sketch bins: a distribution's
        quantiles do; a read of counters only leaves the bins unread."""
        names = None if metrics is None else tuple(metrics)
        return any(m.kind is Kind.DISTRIBUTION for m in self.view(names))

    def columns_of(self, metrics: Collection[str] | None) -> tuple[str, ...]:
        """The columns of the named metrics, in registry order (None: `value_columns`): what a
        query reads when it shows only some metrics (`/v1/closures` of a full-set store)."""
        if metrics is None:
            return self.value_columns
        return tuple(c for m in self.metrics if m.name in metrics for c in m.columns)


#: the exact statistics of a distribution that rows can be ranked by (`Registry.rankable`)
RANK_STATS: Final = ("count", "sum", "min", "max", "mean")

#: the conditions a counter may put on the events it counts (`Metric.when`); the compiled
#: fold implements the same names
CONDITIONS: Final = frozenset({"unread", "window_expired"})
#: the rules of counters that count by a rule of their own (`Metric.rule`), in both folds
FIRST_CLOSE: Final = "first_close"
RULES: Final = frozenset({FIRST_CLOSE})
#: the gauges both folds count (`Registry.gauges`), in the order a `Delta.gauges` value holds them
GAUGE_NAMES: Final = ("open", "unassigned", "snoozed")
#: the fact column of time to first assignment (`consumer.fold.reference`: its own rule)
TTFA: Final = "ttfa"

CHANNEL_TYPE: Final = "channel_type"
ACCOUNT: Final = "account"
INBOX: Final = "inbox"
APP: Final = "app"
ACCOUNT_CHANNEL_TYPE: Final = "account,channel_type"
