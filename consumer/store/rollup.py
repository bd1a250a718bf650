"""A commit's facts rolled up into metric rows on the client, for both stores: one row per
(grouping, window, start, key) however many facts fall in it, so that the store makes one
upsert per changed row with nothing left to compute, where SQL evaluated every metric's
expression and grouped the facts once per grouping and window (docs/performance.md).

The plans (consumer.store.rollup_plan) are data made from the registry. This module's
`rollup` is the reference; the compiled twin (consumer/native/src/rollup.rs) reads the
facts as a `native.Facts` (`compiled_facts`: the compiled fold hands its facts so) and
writes the rows without the GIL: packed for SQLite's `packed_rows` (`RolledUp`), or as
PostgreSQL's binary COPY tuples (`copy_tuples`). tests/unit/consumer/test_rollup.py holds
them equal, and equal to the SQL aggregation of the same facts
(tests/support/sql_aggregation.py).

A row: (by, win, start, key, *values, bins), sorted, so that inserts walk the table's key
order; its bins (bin, n) pairs as `normalize` leaves them; its partition and seq are the
commit's, bound by the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from consumer.fold.delta import Fact, GaugeKey, Gauges, LagKey, Lags
from consumer.fold.native import native
from consumer.fold.state import I64_MAX, I64_MIN
from consumer.store.rollup_plan import (
    Column,
    Op,
    Plan,
    Target,
    gauge_plan,
    lag_plan,
    plan_of,
)

__all__ = [
    "COPY_SIGNATURE",
    "COPY_TRAILER",
    "Column",
    "Op",
    "Plan",
    "RolledUp",
    "Target",
    "compiled_facts",
    "copy_tuples",
    "gauge_changes",
    "gauge_plan",
    "lag_facts",
    "lag_plan",
    "normalize",
    "plan_of",
    "rollup",
]

#: the signature and header of a binary COPY (no flags, no extension) and its trailer: the
#: payloads of `copy_tuples` go between them (PostgreSQL's COPY reference, "Binary Format")
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"


def lag_facts(lags: Mapping[LagKey, Lags]) -> list[tuple[Any, ...]]:
    """A partition's ingest-lag partials as facts of `lag_plan`: one per (channel type,
    hour) with its count, sum and max, and one per bin."""
    out: list[tuple[Any, ...]] = []
    for (ch, h), (n, total, mx, bins) in lags.items():
        out.append((ch, h, n, total, mx, 0, None))
        out += [(ch, h, 0, 0, None, count, b) for b, count in bins.items()]
    return out


def gauge_changes(deltas: Iterable[dict[GaugeKey, Gauges]]) -> list[tuple[Any, ...]]:
    """Some deltas' gauge changes as facts of `gauge_plan`: (*key, 0, *changes), those that
    change nothing (an event that kept a conversation at its key) left out."""
    return [(*key, 0, *changes) for gauges in deltas for key, changes in gauges.items() if any(changes)]


@cache
def _native_plan(plan: Plan) -> list[tuple[Any, ...]]:
    """The plan's targets as the compiled rollup reads them."""
    return [
        (tg.by, tg.win, tg.size, list(tg.key), list(tg.present), [(int(op), *c) for op, *c in tg.columns],
         list(tg.bins), list(tg.may_miss))
        for tg in plan.targets
    ]  # fmt: skip


def compiled_facts(facts: Sequence[Fact], width: int) -> Any:
    """Facts as the compiled rollup reads them (`native.Facts`): the compiled fold's as they
    are, a list of tuples (the reference fold's, gauge changes) packed and decoded."""
    assert native is not None  # the store rolls up in the compiled part only where it is built
    if isinstance(facts, native.Facts):
        if facts.width != width:
            raise ValueError(f"facts of {facts.width} fields, where the registry lays out {width}")
        return facts
    return native.unpack_facts(native.pack_rows(list(facts), width), len(facts), width)


@dataclass(frozen=True)
class RolledUp:
    """The rows of some partitions' facts (`native.Facts`, `compiled_facts`) in a plan's
    targets, packed, by the compiled rollup: a payload per grouping and window, made as
    they are iterated over (each iteration makes them afresh, so a retried write finds them
    all). Rows of different targets never merge, so a commit holds one target's rows at a
    time, not all of them (a commit's peak memory: docs/performance.md), and a smaller
    hash table is quicker too."""

    facts: list[Any]
    plan: Plan

    def __iter__(self) -> Iterator[bytes]:
        assert native is not None  # the store rolls up in the compiled part only where it is built
        for target in _native_plan(self.plan):
            rows: bytes = native.rollup_rows(self.facts, self.plan.t, target)
            yield rows


def copy_tuples(facts: Any, plan: Plan, partition: int, seq: int) -> Iterator[bytes]:
    """One partition's facts (a `native.Facts`) rolled up by the compiled rollup as binary
    COPY tuples, one payload per grouping and window: (by, win, start, key, partition,
    *values, seq, bin_ids, bin_ns), the bins as two int8 arrays; made as they are iterated
    over, one target's at a time."""
    assert native is not None  # the store rolls up in the compiled part only where it is built
    for target in _native_plan(plan):
        rows: bytes = native.rollup_copy([facts], plan.t, target, partition, seq)
        yield rows


def normalize(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sketch bins (bin, n) sorted by bin, equal bins summed, zero counts dropped. A sum
    beyond 64 bits is an error, as SQLite's own sum() makes it (the compiled rollup and
    SQLite functions do the same)."""
    sums: dict[int, int] = {}
    for b, n in sorted(pairs):  # in bin order, as the compiled functions add
        total = sums.get(b, 0) + n
        if not I64_MIN <= total <= I64_MAX:
            raise OverflowError("bins: a bin's count overflows 64 bits")
        sums[b] = total
    return [(b, n) for b, n in sums.items() if n != 0]


def _start(t: int, size: int) -> int:
    return _checked(t - t % size) if size else 0  # Python's % floors, as the windows do


def _checked(total: int) -> int:
    if not I64_MIN <= total <= I64_MAX:
        raise OverflowError("rollup: a metric row's value overflows 64 bits")
    return total


def rollup(facts: Iterable[Fact], plan: Plan) -> list[tuple[Any, ...]]:
    """The rows of `facts` (the reference of `native.rollup_rows`), sorted by key, their
    bins normalized (bin, n) pairs."""
    rows: dict[tuple[str, str, int, str], tuple[list[Any], list[tuple[int, int]]]] = {}
    for fact in facts:
        t = fact[plan.t]
        for tg in plan.targets:
            if any(fact[i] is None for i in tg.present):
                continue
            parts = [fact[i] for i in tg.key]
            if None in parts:  # a source's missing inbox or app only
                at = [i for i, v in zip(tg.key, parts, strict=True) if v is None and i not in tg.may_miss]
                if at:
                    raise ValueError(f"rollup: a fact without its key field {at[0]}")
            # a source's missing inbox or app is empty text
            k = (tg.by, tg.win, _start(t, tg.size), "|".join("" if v is None else str(v) for v in parts))
            row = rows.get(k)
            if row is None:
                row = rows[k] = (
                    [None if op in (Op.NULL, Op.MIN, Op.MAX) else 0 for op, *_ in tg.columns],
                    [],
                )
            _add(row[0], tg.columns, fact)
            for n, b, base in tg.bins:
                if fact[n]:  # the first distribution the fact carries a value of
                    row[1].append((_checked(fact[b] + base), fact[n]))
                    break
    return [(*k, *values, normalize(pairs)) for k, (values, pairs) in sorted(rows.items())]


def _add(values: list[Any], columns: Sequence[Column], fact: Fact) -> None:
    for i, (op, a, b, lo, hi) in enumerate(columns):
        if op == Op.SUM:
            values[i] = _checked(values[i] + (fact[a] or 0))
        elif op == Op.SUM_PRODUCT:
            if fact[a] and fact[b] is not None:
                values[i] = _checked(values[i] + _checked(fact[a] * fact[b]))
        elif op in (Op.MIN, Op.MAX):
            if fact[a] is not None and fact[a] > 0 and (v := fact[b]) is not None:
                old = values[i]
                values[i] = v if old is None else (min(old, v) if op == Op.MIN else max(old, v))
        elif op == Op.BUCKET:
            v = fact[b]
            if fact[a] and v is not None and (lo is None or v > lo) and (hi is None or v <= hi):
                values[i] = _checked(values[i] + fact[a])
