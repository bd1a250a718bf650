"""What a fold hands to the store at a commit: facts, closures and ingest-lag partials.

Pure data: the reference fold (`consumer.fold.reference`) and the compiled one both fill
a `Delta`; the stores turn it into metric rows by rolling its facts and partials up
before their upserts (consumer.store.rollup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property
from operator import itemgetter
from typing import Any, Final

import orjson

from consumer.fold.registry import REGISTRY, Grouping, Kind, Metric, Registry
from consumer.fold.sketch import lag_bin_of
from consumer.fold.windows import ALL, ALL_START, SIZED

BY_CHANNEL: Final = "channel_type"
BY_ACCOUNT: Final = "account"

RowKey = tuple[str, str, str, int]  # (by, key, window, window_start)
ConvKey = tuple[int, int]  # (account, conversation id)
#: how the fold keys a conversation in memory: (account << 32) | id where both fit (one int
#: object instead of a tuple and two ints: ~80 bytes less per conversation), else the tuple
MemKey = int | ConvKey
Conversation = list[
    Any
]  # [last_time, starts, closures, seen(, first, created, assigns)]: consumer.fold.reference
LAST, STARTS, CLOSURES, SEEN, FIRST, CREATED_AT, ASSIGNS, LATEST = 0, 1, 2, 3, 4, 5, 6, 7
#: a conversation's latest event (the gauges' state): [time, event id, kind, channel_type, inbox, app]
L_TIME, L_ID, L_KIND, L_CHANNEL, L_INBOX, L_APP = 0, 1, 2, 3, 4, 5
#: the first close of a conversation: [closed_at, event id (None: a state from before
#: first_closes, never counted), event hash]
F_CLOSED, F_ID, F_HASH = 0, 1, 2
#: an assignment a conversation remembers: [assigned_at, event id, channel_type, inbox, app]
A_TIME, A_ID, A_CHANNEL, A_INBOX, A_APP = 0, 1, 2, 3, 4
C_HASH, C_CLOSED, C_CHANNEL, C_START, C_INBOX, C_APP = 0, 1, 2, 3, 4, 5


ClosureRow = tuple[int, int, int, int, str, int, int | None, int | None, int | None, str | None]
# (event_hash, partition, account, conversation, channel_type, closed_at, ttc, inbox, app,
# event_id): event_id None where a fold re-sends a closure it folded in an earlier commit
# (a late start corrected its ttc; the state keeps no ids): the store keeps the id it has
CLOSURE_WIDTH: Final = 10
#: where a `ClosureRow` holds the event id
CLOSURE_EVENT_ID: Final = 9
#: a `ClosureRow`'s (account, closed_at, event_hash): the closures table's key in both
#: stores, the order a commit inserts them in (each lands beside the last)
CLOSURE_KEY_FIELDS: Final = (2, 5, 0)
CLOSURE_KEY: Final = itemgetter(*CLOSURE_KEY_FIELDS)

FirstAssignmentRow = tuple[int, int, int, str, int | None, int | None, int, int]
# (account, conversation, partition, channel_type, inbox, app, assigned_at, ttfa): the
# assignment counted in time_to_first_assignment, one per conversation (the store's
# first_assignments table: a row's min/max after a retraction is recomputed from it)
FIRST_ASSIGNMENT_WIDTH: Final = 8

Fact = tuple[Any, ...]
"""What one event (or a late correction) adds to the rows it falls in, one value per
`FACT_FIELDS` (laid out by the registry):

    (channel_type, account, inbox, app, time, closures, reopens, closed_unread, created,
     assignments, snoozes, closed_window_expired, first_closes, ttc_n, ttc, ttc_bin,
     ttfa_n, ttfa, ttfa_bin)

the dimensions, the event time, each counter's increment (counters first, in registry
order), and for each distribution its
sign (`<column>_n`: +1 a value added, -1 retracted because a late event corrected it, 0
none), value and sketch bin; a fact carries at most one distribution value. The fold only
appends facts (cheap per event); the stores aggregate them per row."""


@dataclass(frozen=True)
class FactLayout:
    """Where each metric's values sit in a `Fact`, by a registry."""

    registry: Registry
    #: the metrics facts carry (the others are pre-aggregated partials, see `Lags`)
    fact_metrics: tuple[Metric, ...]
    partial_metrics: tuple[Metric, ...]
    fields: tuple[str, ...]

    def distributions_in(self, grouping: str) -> list[Metric]:
        """The distributions facts carry that count in a grouping's rows: their values'
        bins go in its rows, in every window (a row's bins merge across its sources)."""
        return [m for m in self.fact_metrics if m.kind is Kind.DISTRIBUTION and m.in_grouping(grouping)]

    def row_keys(self, fact: Fact) -> list[RowKey]:
        """The rows a fact counts in: each stored grouping whose dimensions the fact has a
        value for (a source's: every one, a missing value empty), x the windows it stores
        (`Registry.stores`: the 1m, 1h and 1d windows and all time, less those it derives);
        a key is the dimensions' values joined by `|`."""
        t = fact[self.t_at]
        starts = [(name, t - t % size) for name, size in SIZED]
        starts.append((ALL, ALL_START))
        keys: list[RowKey] = []
        for g, at, source in self.grouping_at:
            values = [fact[i] for i in at]
            if None in values and not source:
                continue
            key = "|".join("" if v is None else str(v) for v in values)
            keys.extend((g.name, key, w, start) for w, start in starts if self.registry.stores(g, w))
        return keys

    @cached_property
    def t_at(self) -> int:
        return self.fields.index("t")

    @cached_property
    def grouping_at(self) -> list[tuple[Grouping, list[int], bool]]:
        """(grouping, positions of its dimensions in a fact, whether it is a source) of each
        stored grouping."""
        r = self.registry
        return [(g, [self.fields.index(d) for d in g.dimensions], r.is_source(g.name)) for g in r.stored]

    @cached_property
    def fields_of(self) -> frozenset[str]:
        """The names of the metrics facts carry."""
        return frozenset(m.name for m in self.fact_metrics)

    def position(self, metric: str) -> int:
        """Index of a counter's value, or of a distribution's sign (value and bin follow)."""
        m = self.registry.metric(metric)
        return self.fields.index(m.column if m.kind is Kind.COUNTER else f"{m.column}_n")


@cache
def layout_of(registry: Registry) -> FactLayout:
    facts = tuple(m for m in registry.metrics if m.partial_size is None and m.kind is not Kind.GAUGE)
    counters = [m for m in facts if m.kind is Kind.COUNTER]
    dists = [m for m in facts if m.kind is Kind.DISTRIBUTION]
    fields = (
        *(d.name for d in registry.dimensions),
        "t",
        *(m.column for m in counters),
        *(c for m in dists for c in (f"{m.column}_n", m.column, f"{m.column}_bin")),
    )
    partials = tuple(m for m in registry.metrics if m.partial_size is not None)
    return FactLayout(registry, (*counters, *dists), partials, fields)


LAYOUT: Final = layout_of(REGISTRY)
FACT_FIELDS: Final = LAYOUT.fields

GaugeKey = tuple[str, int, int | None, int | None]
"""(channel type, account, inbox, app) of a conversation's latest event: where it counts in
the gauges (`consumer.fold.registry.GAUGE_NAMES`)"""
#: the dimensions of a `GaugeKey`, in its order
GAUGE_KEY: Final = ("channel_type", "account", "inbox", "app")
Gauges = list[int]  # [open, unassigned, snoozed]: what a commit adds to a key's gauges (+ or -)

LagKey = tuple[str, int]  # (channel type, start of the event time's hour)
Lags = list[Any]  # [count, sum, max, {lag bin: count}] of ingest lags, milliseconds
"""Ingest lag (gateway receive time - event time) counts in the channel type's 1-hour,
1-day and all-time rows only: the fold sums it per channel type and hour (few keys), and
the store rolls those up."""


@dataclass
class Delta:
    """Metric changes of one partition since its last commit."""

    #: the compiled fold hands a `_fold_native.Facts` instead: a read-only sequence of the
    #: same tuples (indexes, iteration and len; no slices, no pickling) that the SQLite
    #: store rolls up without making them (a full-set commit's facts were ~25 MB of tuples)
    facts: list[Fact] = field(default_factory=list)
    closures: dict[int, ClosureRow] = field(default_factory=dict)
    lags: dict[LagKey, Lags] = field(default_factory=dict)
    #: the facts that retract a duration (also in `facts`): few, and all `recheck` reads
    retractions: list[Fact] = field(default_factory=list)
    #: the conversations whose counted first assignment changed, by (account, conversation)
    first_assignments: dict[ConvKey, FirstAssignmentRow] = field(default_factory=dict)
    #: what the gauges change by, per key of the latest event (a conversation's contribution
    #: moves from its old latest event's key to its new one; a forgotten one is taken back)
    gauges: dict[GaugeKey, Gauges] = field(default_factory=dict)

    def add_gauges(self, key: GaugeKey, values: tuple[int, int, int], sign: int) -> None:
        """Add (sign 1) or take back (-1) one conversation's gauges `values` at `key`."""
        g = self.gauges.get(key)
        if g is None:
            g = self.gauges[key] = [0, 0, 0]
        g[0] += sign * values[0]
        g[1] += sign * values[1]
        g[2] += sign * values[2]

    def merge_gauges(self, other: Delta) -> None:
        """Add another delta's gauge changes to this one's (the ones `expire` makes)."""
        for key, values in other.gauges.items():
            self.add_gauges(key, (values[0], values[1], values[2]), 1)

    def add_lag(self, channel_type: str, t: int, millis: int) -> None:
        key = (channel_type, t - t % 3600)
        agg = self.lags.get(key)
        if agg is None:
            agg = self.lags[key] = [0, 0, millis, {}]
        agg[0] += 1
        agg[1] += millis
        if millis > agg[2]:
            agg[2] = millis
        bins = agg[3]
        b = lag_bin_of(millis)
        bins[b] = bins.get(b, 0) + 1

    def recheck(
        self, registry: Registry = REGISTRY, metric: str = "time_to_close"
    ) -> dict[RowKey, tuple[int, int]]:
        """Rows that lost values of a distribution, with the least and greatest lost: where
        the row's min (max) is not below (above) them, it must be recomputed from the
        closures (time_to_close) or first assignments (time_to_first_assignment)."""
        out: dict[RowKey, tuple[int, int]] = {}
        layout = layout_of(registry)
        if not self.retractions or metric not in layout.fields_of:
            return out
        at = layout.position(metric)
        for fact in self.retractions:
            if fact[at] >= 0:  # another distribution's retraction
                continue
            ttc = fact[at + 1]
            for k in layout.row_keys(fact):
                lo, hi = out.get(k, (ttc, ttc))
                out[k] = (min(lo, ttc), max(hi, ttc))
        return out


def gauge_rows(
    deltas: list[dict[GaugeKey, Gauges]], registry: Registry = REGISTRY
) -> dict[tuple[str, str], Gauges]:
    """The gauge changes of some deltas by (grouping, key), as the stores keep them; a
    grouping's optional dimension without a value (no inbox) counts in no row of it, and a
    key whose changes cancel out is left out. The reference: the SQLite store rolls the
    changes up in the compiled rollup (consumer.store.rollup.gauge_plan)."""
    out: dict[tuple[str, str], Gauges] = {}
    groupings = [(g.name, [GAUGE_KEY.index(d) for d in g.dimensions]) for g in registry.groupings]
    for gauges in deltas:
        for dims, values in gauges.items():
            for name, where in groupings:
                parts = [dims[i] for i in where]
                if None in parts:
                    continue
                k = (name, "|".join(map(str, parts)))
                g = out.get(k)
                if g is None:
                    out[k] = list(values)
                else:
                    for i in range(3):
                        g[i] += values[i]
    return {k: v for k, v in out.items() if any(v)}


def row_keys(fact: Fact, registry: Registry = REGISTRY) -> list[RowKey]:
    """The rows a fact (of the registry's layout) counts in (`FactLayout.row_keys`)."""
    return layout_of(registry).row_keys(fact)


_A_LIMIT: Final = 2**31
_C_LIMIT: Final = 2**32


def mem_key(account: int, conversation: int) -> MemKey:
    """The in-memory key of a conversation (see `MemKey`)."""
    if 0 <= account < _A_LIMIT and 0 <= conversation < _C_LIMIT:
        return (account << 32) | conversation
    return (account, conversation)


#: conversations per chunk of `Changes` and of a snapshot (`PartitionFold.snapshot`): a
#: fold builds each chunk's text before copying it out, so small chunks keep that transient
#: copy small
CHUNK: Final = 10_000


@dataclass(frozen=True)
class Changes:
    """The conversations a fold changed since its last `take_changes`, encoded as a store
    keeps them: JSON arrays of `[account, conversation id, state text]`, at most `CHUNK` to
    a chunk, `count` in all. Texts rather than a str per conversation: a commit's changed
    states as Python objects were a large part of a full-set consumer's peak memory."""

    chunks: tuple[bytes, ...] = ()
    count: int = 0

    def __len__(self) -> int:
        return self.count

    def states(self) -> dict[ConvKey, str]:
        """The changed conversations' state texts by (account, conversation id)."""
        return {(a, c): s for chunk in self.chunks for a, c, s in orjson.loads(chunk)}


def json_chunks(items: list[Any], chunk: int) -> list[bytes]:
    """`items` as JSON arrays of at most `chunk` each (a snapshot's chunks, a `Changes`')."""
    return [orjson.dumps(items[i : i + chunk]) for i in range(0, len(items), chunk)]


def decode_snapshot(data: bytes | str) -> dict[ConvKey, str]:
    """The conversations of one chunk of a `PartitionFold.snapshot`."""
    return {conv_key(k if isinstance(k, int) else tuple(k)): b for k, b in orjson.loads(data)}


def conv_key(k: MemKey) -> ConvKey:
    """(account, conversation id) of an in-memory key."""
    return k if isinstance(k, tuple) else (k >> 32, k & (_C_LIMIT - 1))
