"""A commit's facts rolled up on the client (consumer/store/rollup.py, and its
compiled twin consumer/native/src/rollup.rs, packed for SQLite or as PostgreSQL's binary
COPY tuples) make the rows that the SQL aggregation of the same facts makes (the oracle in
tests/support/sql_aggregation.py), the ingest-lag partials roll up as their definition
says, and the SQLite store's upsert of them puts those rows in `metric_rows`."""

from __future__ import annotations

import dataclasses
import operator
import sqlite3
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.fold import native as fold_native
from consumer.fold.delta import gauge_rows, layout_of
from consumer.fold.registry import CLOSURES, REGISTRY, Kind, Registry
from consumer.store import sqlgen
from consumer.store.rollup import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    RolledUp,
    _native_plan,
    compiled_facts,
    copy_tuples,
    gauge_changes,
    gauge_plan,
    lag_facts,
    lag_plan,
    plan_of,
    rollup,
)
from consumer.store.sqlite import bins as sqlite_bins
from consumer.store.sqlite.sql import statements
from support import native_build, sql_aggregation

NATIVE = fold_native.native
needs_native = native_build.needs("the compiled rollup", NATIVE is not None)
REGISTRIES = {"closures": CLOSURES, "full": REGISTRY}
I64 = 2**63


def facts_of(registry: Registry) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Facts as a fold makes them: dimensions (optional ones sometimes None), a time
    (negative too), counter increments (retractions -1), and at most one distribution value
    (its sign, value and bin). Few distinct keys and times, so that rows gather facts."""
    layout = layout_of(registry)
    dists = [m for m in layout.fact_metrics if m.kind is Kind.DISTRIBUTION]
    counters = [m for m in layout.fact_metrics if m.kind is Kind.COUNTER]
    dims = {
        "channel_type": st.sampled_from(["WHATSAPP", "TELEGRAM", "A|B", "ÜBER"]),
        "account": st.sampled_from([1, 7, -3, 10**12]),
        "inbox": st.sampled_from([None, 5, 6]),
        "app": st.sampled_from([None, 1, 2]),
    }
    time = st.sampled_from([0, 59, 60, 3599, 3600, 86_399, 86_400, -1, -61, 1_700_000_000])

    @st.composite
    def fact(draw: st.DrawFn) -> tuple[Any, ...]:
        values: dict[str, Any] = {d.name: draw(dims[d.name]) for d in registry.dimensions}
        values["t"] = draw(time)
        for m in counters:
            values[m.column] = draw(st.sampled_from([0, 0, 1, -1]))
        carried = draw(st.sampled_from([None, *dists]))
        for m in dists:
            sign = draw(st.sampled_from([1, -1, 0])) if m is carried else 0
            value = draw(st.sampled_from([0, 1, 3600, 3601, 14_400, 90_000])) if sign else None
            values[f"{m.column}_n"] = sign
            values[m.column] = value
            values[f"{m.column}_bin"] = None if value is None else draw(st.integers(0, 5))
        return tuple(values[f] for f in layout.fields)

    return st.lists(fact(), max_size=40)


def connection(kind: str = "python") -> sqlite3.Connection:
    sqlite_bins.install()
    db = sqlite3.connect(":memory:", isolation_level=None)
    sqlite_bins.register(db, prefer=kind)
    return db


def by_sql(facts: list[tuple[Any, ...]], registry: Registry) -> list[tuple[Any, ...]]:
    """The rows the SQL aggregation makes of `facts` (the facts staged, SQLite's dialect)."""
    db = connection()
    db.execute(sqlgen.row_table(sqlgen.SQLITE, registry))
    for ddl in sql_aggregation.staging(registry):
        db.execute(ddl)
    width = len(layout_of(registry).fields)
    cols = ", ".join(f"value->>{i}" for i in range(width))
    db.execute(f"INSERT INTO temp.cm_facts SELECT -1, 1, {cols} FROM json_each(?)", (orjson.dumps(facts),))
    for statement in sql_aggregation.aggregation(registry):
        db.execute(statement)
    return stored(db, registry)


def stored(db: sqlite3.Connection, registry: Registry) -> list[tuple[Any, ...]]:
    cols = ", ".join(("by", "win", "start", "key", *registry.value_columns, "bins"))
    return db.execute(f"SELECT {cols} FROM metric_rows ORDER BY by, win, start, key").fetchall()


def packed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Reference rows with their bins as SQLite keeps them (a blob, or NULL)."""
    return [(*r[:-1], sqlite_bins.pack(r[-1])) for r in rows]


def unpacked(payload: bytes, registry: Registry) -> list[tuple[Any, ...]]:
    db = connection("native")
    width = 5 + len(registry.value_columns)
    cols = ", ".join(f"c{i}" for i in range(width))
    return db.execute(f"SELECT {cols} FROM packed_rows(?)", (payload,)).fetchall()


@pytest.mark.parametrize("name", REGISTRIES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_reference_rollup_makes_the_rows_the_sql_makes(name: str, data: st.DataObject) -> None:
    registry = REGISTRIES[name]
    facts = data.draw(facts_of(registry))
    assert packed(rollup(facts, plan_of(registry))) == by_sql(facts, registry)


@needs_native
@pytest.mark.parametrize("name", REGISTRIES)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_compiled_rollup_equals_the_reference(name: str, data: st.DataObject) -> None:
    registry = REGISTRIES[name]
    facts = data.draw(facts_of(registry))
    assert NATIVE is not None
    compiled = [compiled_facts(facts, len(layout_of(registry).fields))]
    reference = packed(rollup(facts, plan_of(registry)))
    rolled = RolledUp(compiled, plan_of(registry))
    payloads = list(rolled)
    assert list(rolled) == payloads  # made afresh each time it is iterated (a retried write)
    # split over partitions' Facts, the same rows
    halves = [compiled_facts(facts[: len(facts) // 2], len(layout_of(registry).fields)),
              compiled_facts(facts[len(facts) // 2 :], len(layout_of(registry).fields))]  # fmt: skip
    assert list(RolledUp(halves, plan_of(registry))) == payloads
    for payload, target in zip(payloads, plan_of(registry).targets, strict=True):
        # a target's rows, in the reference's (key) order
        assert unpacked(payload, registry) == [r for r in reference if r[:2] == (target.by, target.win)]


@pytest.mark.parametrize("kind", ["python", *(["native"] if NATIVE is not None else [])])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_stores_upsert_adds_rolled_up_rows_to_the_stored_ones(kind: str, data: st.DataObject) -> None:
    """Both payload kinds of `upsert_rolled` (packed rows, or a row per execute): a second
    commit of the same facts doubles the sums and keeps min and max."""
    registry = REGISTRY
    facts = data.draw(facts_of(registry))
    facts += [("SMS", 9, 4, 2, 100, *([0] * (len(layout_of(registry).fields) - 5)))]
    sql = statements(registry)
    db = connection(kind)
    db.execute(sql.rows)
    rows = rollup(facts, plan_of(registry))
    for _ in range(2):
        if kind == "native":
            assert NATIVE is not None
            for payload in RolledUp([compiled_facts(facts, sql.fact_width)], plan_of(registry)):
                db.execute(sql.upsert_rolled[True], (payload, -1, 3))
        else:
            db.executemany(
                sql.upsert_rolled[False], [(*r[:4], -1, *r[4:-1], 3, sqlite_bins.pack(r[-1])) for r in rows]
            )
    twice = by_sql(facts + facts, registry)
    assert stored(db, registry) == twice
    assert db.execute("SELECT DISTINCT partition, seq FROM metric_rows").fetchall() == [(-1, 3)]


#: time to close counted in the channel types' rows only: its bins stay out of the others'
LIMITED = dataclasses.replace(
    REGISTRY,
    metrics=tuple(
        dataclasses.replace(m, groupings=("channel_type",)) if m.name == "time_to_close" else m
        for m in REGISTRY.metrics
    ),
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_distribution_of_some_groupings_makes_the_same_rows_both_ways(data: st.DataObject) -> None:
    facts = data.draw(facts_of(LIMITED))
    rows = packed(rollup(facts, plan_of(LIMITED)))
    assert rows == by_sql(facts, LIMITED)
    if NATIVE is not None:
        compiled = [compiled_facts(facts, len(layout_of(LIMITED).fields))]
        assert sorted(r for p in RolledUp(compiled, plan_of(LIMITED)) for r in unpacked(p, LIMITED)) == rows


def overflowing(registry: Registry) -> list[tuple[Any, ...]]:
    layout = layout_of(registry)
    at = layout.fields.index("closures")
    fact = [0] * len(layout.fields)
    fact[:5] = ["SMS", 1, None, None, 0]
    fact[at] = I64 - 1
    return [tuple(fact), tuple(fact)]


def test_a_sum_beyond_64_bits_is_an_error_as_in_sql() -> None:
    facts = overflowing(CLOSURES)
    with pytest.raises(OverflowError, match="64 bits"):
        rollup(facts, plan_of(CLOSURES))
    with pytest.raises(sqlite3.OperationalError, match="integer overflow"):
        by_sql(facts, CLOSURES)
    if NATIVE is not None:
        with pytest.raises(OverflowError, match="64 bits"):
            list(RolledUp([compiled_facts(facts, len(layout_of(CLOSURES).fields))], plan_of(CLOSURES)))


GOOD = ("SMS", 1, None, None, 0, 1, 0, 0, 1, 60, 3)  # a closure of 60 s (CLOSURES' fact fields)


@needs_native
@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (lambda pack: b"", "fields expected"),
        (lambda pack: pack([GOOD[:2]], 2), "fields expected"),  # facts of another width
        (lambda pack: pack([GOOD], 11)[:-1], "malformed"),
        (lambda pack: pack([(*GOOD[:5], "1", *GOOD[6:])], 11), "field 5 is not an integer"),
        (lambda pack: pack([(*GOOD[:4], None, *GOOD[5:])], 11), "without a time"),
        (lambda pack: pack([(*GOOD[:10], None)], 11), "without a bin"),
        (lambda pack: pack([(b"SMS", *GOOD[1:])], 11), "is a blob"),
        (lambda pack: pack([(*GOOD[:9], "60", GOOD[10])], 11), "field 9 is not an integer"),  # a value
        (lambda pack: pack([(*GOOD[:10], "3")], 11), "field 10 is not an integer"),  # a bin
    ],
)
def test_what_is_not_a_commits_facts_is_an_error(payload: Any, why: str) -> None:
    assert NATIVE is not None
    list(RolledUp([compiled_facts([GOOD], 11)], plan_of(CLOSURES)))  # the good one rolls up
    with pytest.raises(ValueError, match=why):
        list(RolledUp([NATIVE.unpack_facts(payload(NATIVE.pack_rows), 1, 11)], plan_of(CLOSURES)))


def test_a_window_start_beyond_64_bits_is_an_error() -> None:
    fact = ("SMS", 1, None, None, -(2**63), *GOOD[5:])
    with pytest.raises(OverflowError):
        rollup([fact], plan_of(CLOSURES))
    if NATIVE is not None:
        with pytest.raises(OverflowError):
            list(RolledUp([compiled_facts([fact], 11)], plan_of(CLOSURES)))


def test_a_fact_without_its_key_is_an_error() -> None:
    fact = ("SMS", None, None, None, 0, *([0] * (len(layout_of(CLOSURES).fields) - 5)))
    with pytest.raises(ValueError, match="key field 1"):
        rollup([fact], plan_of(CLOSURES))
    if NATIVE is not None:
        with pytest.raises(ValueError, match="key field 1"):
            list(RolledUp([compiled_facts([fact], len(fact))], plan_of(CLOSURES)))


def gauge_deltas() -> st.SearchStrategy[list[dict[Any, list[int]]]]:
    """Some partitions' gauge changes (`Delta.gauges`): keys of few values, optional
    dimensions sometimes None, changes that cancel out across partitions too."""
    key = st.tuples(
        st.sampled_from(["WHATSAPP", "A|B", "ÜBER"]),
        st.sampled_from([1, -3, 10**12]),
        st.sampled_from([None, 5, 6]),
        st.sampled_from([None, 1, 2]),
    )
    change = st.lists(st.sampled_from([0, 1, -1, 2, -(2**40)]), min_size=3, max_size=3)
    return st.lists(st.dictionaries(key, change, max_size=12), max_size=3)


def gauge_payload_rows(payload: bytes) -> list[tuple[Any, ...]]:
    cols = ", ".join(f"c{i}" for i in range(5 + len(REGISTRY.gauges)))
    return connection("native").execute(f"SELECT {cols} FROM packed_rows(?)", (payload,)).fetchall()


@needs_native
@settings(max_examples=300, deadline=None)
@given(deltas=gauge_deltas())
def test_the_compiled_gauge_rollup_sums_as_gauge_rows_does(deltas: list[dict[Any, list[int]]]) -> None:
    """Each grouping's payload holds its keys' summed changes in key order: those that do
    not cancel out are `gauge_rows` (the reference, which SQLite's slow path runs)."""
    assert NATIVE is not None
    plan = gauge_plan(REGISTRY)
    changes = gauge_changes(deltas)
    rolled = RolledUp([compiled_facts(changes, plan.width)], plan)
    rows = [r for payload in rolled for r in gauge_payload_rows(payload)]
    assert [r for payload in rolled for r in gauge_payload_rows(payload)] == rows  # again, alike
    for g in REGISTRY.groupings:
        mine = [r for r in rows if r[0] == g.name]
        assert [r[3] for r in mine] == sorted(r[3] for r in mine)  # in the backlog's key order
        assert all(r[1:3] == ("all", 0) and r[-1] is None for r in mine)
    assert {(r[0], r[3]): list(r[4:-1]) for r in rows if any(r[4:-1])} == gauge_rows(deltas, REGISTRY)


@pytest.mark.parametrize("kind", ["python", *(["native"] if NATIVE is not None else [])])
@settings(max_examples=60, deadline=None)
@given(deltas=gauge_deltas())
def test_the_stores_backlog_upsert_adds_the_changes_that_do_not_cancel_out(
    kind: str, deltas: list[dict[Any, list[int]]]
) -> None:
    """Both payload kinds of the backlog upsert, applied twice: each key's gauges are its
    changes doubled; a key whose changes cancel out gets no row."""
    db = connection(kind)
    db.execute(sqlgen.backlog_table(sqlgen.SQLITE, REGISTRY))
    for _ in range(2):
        if kind == "native":
            assert NATIVE is not None
            plan = gauge_plan(REGISTRY)
            changes = gauge_changes(deltas)
            upsert = sqlgen.backlog_upsert(sqlgen.SQLITE, REGISTRY, packed=True)
            for payload in RolledUp([compiled_facts(changes, plan.width)], plan):
                db.execute(upsert, (payload, -1, 3))
        else:
            rows = [(*k, *v) for k, v in sorted(gauge_rows(deltas, REGISTRY).items())]
            db.execute(sqlgen.backlog_upsert(sqlgen.SQLITE, REGISTRY), (orjson.dumps(rows), -1, 3))
    cols = ", ".join(g.column for g in REGISTRY.gauges)
    stored = {(by, key): list(v) for by, key, *v in db.execute(f"SELECT by, key, {cols} FROM backlog")}
    assert stored == {k: [2 * x for x in v] for k, v in gauge_rows(deltas, REGISTRY).items()}
    assert db.execute("SELECT DISTINCT partition, seq FROM backlog").fetchall() in ([], [(-1, 3)])


@needs_native
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_compiled_facts_read_back_as_the_tuples_they_were(data: st.DataObject) -> None:
    """`Facts` (the compiled fold's `Delta.facts`) is a sequence of the fact tuples: the
    PostgreSQL store and the tests read it so."""
    facts = data.draw(facts_of(REGISTRY))
    compiled = compiled_facts(facts, len(layout_of(REGISTRY).fields))
    assert len(compiled) == len(facts) and list(compiled) == facts
    if facts:
        assert compiled[-1] == facts[-1] and compiled[-len(facts)] == facts[0]
    with pytest.raises(IndexError):
        compiled[len(facts)]
    with pytest.raises(IndexError):
        compiled[-len(facts) - 1]


@needs_native
def test_facts_of_another_width_are_refused_and_no_facts_make_no_rows() -> None:
    assert NATIVE is not None
    closures, full = len(layout_of(CLOSURES).fields), len(layout_of(REGISTRY).fields)
    wide = compiled_facts([("SMS", 1, None, None, 0, *([0] * (full - 5)))], full)
    with pytest.raises(ValueError, match=f"facts of {full} fields, where the registry lays out {closures}"):
        compiled_facts(wide, closures)
    narrow = compiled_facts([GOOD], closures)
    with pytest.raises(ValueError, match="different widths"):
        NATIVE.rollup_rows([narrow, wide], 4, _native_plan(plan_of(CLOSURES))[0])
    for payload in RolledUp([], plan_of(CLOSURES)):
        assert unpacked(payload, CLOSURES) == []


def copy_tuples_read(payload: bytes, types: str) -> list[tuple[Any, ...]]:
    """PostgreSQL binary COPY tuples read back (`types`: t text, i int4, q int8, a int8[]
    per field), as `array_send` and the COPY reference lay them out."""
    out, at = [], 0
    while at < len(payload):
        (fields,) = struct.unpack_from(">h", payload, at)
        at += 2
        assert fields == len(types)
        row: list[Any] = []
        for kind in types:
            (size,) = struct.unpack_from(">i", payload, at)
            at += 4
            if size == -1:
                row.append(None)
                continue
            raw = payload[at : at + size]
            at += size
            if kind == "t":
                row.append(raw.decode())
            elif kind == "a":
                ndim, nulls, oid, length, lower = struct.unpack_from(">5i", raw)
                assert (ndim, nulls, oid, lower) == (1, 0, 20, 1) and length > 0
                items = struct.unpack_from(">" + "iq" * length, raw, 20)
                assert items[::2] == (8,) * length and len(raw) == 20 + 12 * length
                row.append(list(items[1::2]))
            else:
                assert size == (4 if kind == "i" else 8)
                row.append(int.from_bytes(raw, "big", signed=True))
        out.append(tuple(row))
    return out


@needs_native
@pytest.mark.parametrize("name", REGISTRIES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_compiled_copy_tuples_are_the_reference_rows_of_a_partition(
    name: str, data: st.DataObject
) -> None:
    """`copy_tuples`: the rows as (by, win, start, key, partition, *values, seq, bin_ids,
    bin_ns), as the reference makes them (no bins: both NULL)."""
    registry = REGISTRIES[name]
    facts = data.draw(facts_of(registry))
    partition, seq = data.draw(st.sampled_from([(0, 1), (5, 2**40), (2**31 - 1, -1)]))
    plan = plan_of(registry)
    values = len(registry.value_columns)
    rows = []
    for payload in copy_tuples(compiled_facts(facts, plan.width), plan, partition, seq):
        rows += copy_tuples_read(payload, "ttqti" + "q" * values + "qaa")
    expected = [
        (*r[:4], partition, *r[4:-1], seq, [b for b, _ in r[-1]] or None, [n for _, n in r[-1]] or None)
        for r in rollup(facts, plan)
    ]
    assert sorted(rows, key=operator.itemgetter(0, 1, 2, 3)) == expected
    # the signature and trailer around them make a stream PostgreSQL's format reads
    assert COPY_SIGNATURE.startswith(b"PGCOPY\n\xff\r\n\x00") and len(COPY_SIGNATURE) == 19
    assert struct.pack(">h", -1) == COPY_TRAILER


def lag_deltas() -> st.SearchStrategy[list[dict[Any, list[Any]]]]:
    """Some partitions' ingest-lag partials (`Delta.lags`): (channel type, hour) ->
    [count, sum, max, {bin: n}], in hours of one day and the next."""
    key = st.tuples(st.sampled_from(["WHATSAPP", "A|B"]), st.sampled_from([0, 3600, 82_800, 86_400, -3600]))
    partial = st.tuples(
        st.integers(1, 5), st.integers(0, 10**9), st.integers(0, 10**6),
        st.dictionaries(st.integers(0, 6), st.integers(1, 3), min_size=1, max_size=3),
    ).map(list)  # fmt: skip
    return st.lists(st.dictionaries(key, partial, max_size=6), min_size=1, max_size=3)


def lag_expected(deltas: list[dict[Any, list[Any]]], registry: Registry) -> list[tuple[Any, ...]]:
    """By the definition: per window the ingest lag counts in (the channel types' 1h, 1d and
    all-time rows), count and sum summed, min unknown, max the greatest, bins summed;
    every other column holds nothing."""
    lag = registry.metric("ingest_lag")
    out: dict[tuple[Any, ...], list[Any]] = {}
    for lags in deltas:
        for (ch, h), (n, total, mx, bins) in lags.items():
            for win, size in registry.windows.items():
                if not lag.counts_in("channel_type", win):
                    continue
                k = ("channel_type", win, h - h % size if size else 0, ch)
                row = out.setdefault(k, [0, 0, None, {}])
                row[0] += n
                row[1] += total
                row[2] = mx if row[2] is None else max(row[2], mx)
                for b, c in bins.items():
                    row[3][b] = row[3].get(b, 0) + c
    rows = []
    for k, (n, total, mx, bins) in sorted(out.items()):
        values: list[Any] = []
        for m in registry.metrics:
            if m is lag:
                values += [n, total, None, mx, *([0] * len(m.bucket_columns))]
            elif m.kind is Kind.DISTRIBUTION:
                values += [0, 0, None, None, *([0] * len(m.bucket_columns))]
            else:
                values.append(0)
        rows.append((*k, *values, sorted(bins.items())))
    return rows


@pytest.mark.parametrize("name", REGISTRIES)
@settings(max_examples=60, deadline=None)
@given(deltas=lag_deltas())
def test_the_ingest_lag_partials_roll_up_as_defined(name: str, deltas: list[dict[Any, list[Any]]]) -> None:
    registry = REGISTRIES[name]
    plan = lag_plan(registry)
    assert plan is not None
    facts = [f for lags in deltas for f in lag_facts(lags)]
    expected = lag_expected(deltas, registry)
    assert rollup(facts, plan) == expected
    if NATIVE is not None:
        compiled = [compiled_facts(lag_facts(lags), plan.width) for lags in deltas]
        got = sorted(r for p in RolledUp(compiled, plan) for r in unpacked(p, registry))
        assert got == packed(expected)
        # as PostgreSQL's COPY tuples too (a text key, a NULL min, bins as arrays)
        values = len(registry.value_columns)
        copied = [
            row
            for payload in copy_tuples(compiled_facts(facts, plan.width), plan, 3, 9)
            for row in copy_tuples_read(payload, "ttqti" + "q" * values + "qaa")
        ]
        assert sorted(copied, key=operator.itemgetter(0, 1, 2, 3)) == [
            (*r[:4], 3, *r[4:-1], 9, [b for b, _ in r[-1]] or None, [n for _, n in r[-1]] or None)
            for r in expected
        ]


def test_a_registry_without_partial_metrics_has_no_lag_plan() -> None:
    without = dataclasses.replace(
        CLOSURES,
        metrics=tuple(m for m in CLOSURES.metrics if m.name != "ingest_lag"),
        closures_view=tuple(n for n in CLOSURES.closures_view or () if n != "ingest_lag"),
    )
    assert lag_plan(without) is None
