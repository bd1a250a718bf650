"""A SQLite store's commit: the partitions' deltas, conversations and offsets in one
transaction (`SqliteStore.commit` holds the write lock around `write`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.exceptions import FencedError
from consumer.fold.delta import CLOSURE_WIDTH, FIRST_ASSIGNMENT_WIDTH, gauge_rows
from consumer.fold.native import native
from consumer.fold.registry import Registry
from consumer.fold.windows import WINDOWS
from consumer.store import sqlgen
from consumer.store.base import PartitionCommit
from consumer.store.conversation_log import log_rows
from consumer.store.rollup import (
    RolledUp,
    compiled_facts,
    gauge_changes,
    gauge_plan,
    lag_facts,
    lag_plan,
    plan_of,
    rollup,
)
from consumer.store.sqlite import bins
from consumer.store.sqlite.sql import (
    ALL_TIME_END,
    RECHECK,
    STAGE_CLOSURES,
    STAGE_FIRST_ASSIGNMENTS,
    Statements,
)

#: SQLite has one writer at a time (a commit holds the database's write lock), so keying
#: rows by partition would only multiply them: every row sits under this one writer slot
#: (as do the rows of stores written before rows had a partition), and its seq is the
#: store-wide commit counter. PostgreSQL keys them by partition (consumer.store.sqlgen).
ONE_WRITER = -1

Recheck = dict[tuple[str, str, str, str, int], tuple[int, int]]


@dataclass
class Prepared:
    """A commit's payloads, made before the write lock is taken, but for the compiled
    rollup's rows (metric rows and gauges): those are made as the commit writes them, one
    grouping and window's at a time (`RolledUp`), to hold less memory."""

    packed: bool
    closures: bytes
    #: the metric rows of the facts and of the ingest-lag partials (consumer.store.rollup),
    #: each as packed payloads or (the reference) one list of rows; each can be iterated
    #: over again (a retried write)
    rows: list[Iterable[bytes] | Iterable[list[tuple[Any, ...]]]]
    firsts: bytes | None
    #: the gauges' changes: rolled up as `rows` are (packed), or one JSON array (the
    #: reference, `gauge_rows`); None without changes (packed: changes that cancel out
    #: across partitions still take the commit a seq, which the outbox never misses)
    gauges: Iterable[bytes] | bytes | None
    recheck: Recheck


def prepare(partitions: list[PartitionCommit], registry: Registry, sql: Statements, packed: bool) -> Prepared:
    """Big batches go in as one payload per statement (packed rows, or JSON where the
    compiled functions are not registered), not executemany: sqlite3 releases the GIL
    once per statement, so the polling thread keeps it between rows, and a writer
    re-taking it per row waits a switch interval each time. The reference rollup's rows
    (where the compiled part is not there) are the exception: executemany, as slow paths go."""
    pack = _pack if packed else _json
    # SQLite puts them in their tables' key order (sql.STAGE_CLOSURES)
    closures = pack([c for p in partitions for c in p.delta.closures.values()], CLOSURE_WIDTH)
    # every partition's facts and lags, rolled up together under ONE_WRITER
    sources = [(plan_of(registry), [p.delta.facts for p in partitions if p.delta.facts])]
    if (lags := lag_plan(registry)) is not None:
        sources.append((lags, [lag_facts(p.delta.lags) for p in partitions if p.delta.lags]))
    rows: list[Iterable[bytes] | Iterable[list[tuple[Any, ...]]]] = []
    for plan, facts in sources:
        if not facts:
            continue
        if packed:
            rows.append(RolledUp([compiled_facts(f, plan.width) for f in facts], plan))
        else:
            rows.append([rollup((fact for f in facts for fact in f), plan)])
    firsts = [r for p in partitions for r in p.delta.first_assignments.values()]
    # the gauges: one writer slot, like the metric rows
    gauges: Iterable[bytes] | bytes | None = None
    if packed:
        if changes := gauge_changes(p.delta.gauges for p in partitions):
            plan = gauge_plan(registry)
            gauges = RolledUp([compiled_facts(changes, plan.width)], plan)
    elif summed := gauge_rows([p.delta.gauges for p in partitions], registry):
        gauges = orjson.dumps([(*k, *v) for k, v in sorted(summed.items())])
    recheck: Recheck = {}
    for metric in sqlgen.RECHECKED:
        for p in partitions:
            for (by, key, win, start), (lo, hi) in p.delta.recheck(registry, metric).items():
                k = (metric, by, key, win, start)
                was = recheck.get(k)
                recheck[k] = (lo, hi) if was is None else (min(lo, was[0]), max(hi, was[1]))
    return Prepared(
        packed,
        closures,
        rows,
        pack(firsts, FIRST_ASSIGNMENT_WIDTH) if firsts else None,
        gauges,
        recheck,
    )


def write(
    db: sqlite3.Connection,
    partitions: list[PartitionCommit],
    w: Prepared,
    registry: Registry,
    sql: Statements,
) -> None:
    """The commit's statements, inside the caller's write transaction."""
    check_epochs(db, partitions)
    db.execute(STAGE_CLOSURES[w.packed], (w.closures,))
    if w.firsts is not None:
        db.execute(STAGE_FIRST_ASSIGNMENTS[w.packed], (w.firsts,))
    seq = _next_seq(db) if w.rows or w.gauges is not None else 0
    # no row of a window a purge deleted is made again (sqlgen.purged)
    hz = purged_horizons(db) if w.rows else {}
    retained = sqlgen.retained(hz, "c1", "c2")
    rows_upsert = sql.upsert_rolled[True].replace(" WHERE true", f" WHERE {retained}", 1)
    # a row of the facts' and of the lags' payloads alike is added by a statement of its own
    for payload in (payload for rows in w.rows for payload in rows):
        if isinstance(payload, bytes):
            db.execute(rows_upsert, (payload, ONE_WRITER, seq))
        else:
            db.executemany(
                sql.upsert_rolled[False],
                [
                    (*r[:4], ONE_WRITER, *r[4:-1], seq, bins.pack(r[-1]))
                    for r in payload
                    if sqlgen.kept(hz, r[1], r[2])
                ],
            )
    if isinstance(w.gauges, bytes):
        db.execute(sqlgen.backlog_upsert(sqlgen.SQLITE, registry), (w.gauges, ONE_WRITER, seq))
    elif w.gauges is not None:
        upsert = sqlgen.backlog_upsert(sqlgen.SQLITE, registry, packed=True)
        for payload in w.gauges:
            db.execute(upsert, (payload, ONE_WRITER, seq))
    _recheck(db, registry, w.recheck)
    for p in partitions:
        _commit_partition(db, p)


def check_epochs(db: sqlite3.Connection, partitions: list[PartitionCommit]) -> None:
    """FencedError naming the partitions a newer owner claimed since these commits' epochs."""
    if not partitions:
        return
    marks = ",".join("?" * len(partitions))
    current = dict(
        db.execute(
            f"SELECT partition, epoch FROM owners WHERE partition IN ({marks})",
            [p.partition for p in partitions],
        ).fetchall()
    )
    fenced = [p.partition for p in partitions if current.get(p.partition, 0) > p.epoch]
    if fenced:
        raise FencedError(fenced)


def purged_horizons(db: sqlite3.Connection) -> dict[str, int]:
    """Where the last purge left each window (`sqlgen.purged`)."""
    row = db.execute("SELECT value FROM meta WHERE name = ?", (sqlgen.PURGED_BEFORE,)).fetchone()
    return sqlgen.horizons(None if row is None else row[0])


def _next_seq(db: sqlite3.Connection) -> int:
    """The store-wide commit counter (SQLite has one writer at a time anyway)."""
    row = db.execute(
        "INSERT INTO meta VALUES ('commit_seq', '1') ON CONFLICT DO UPDATE "
        "SET value = CAST(value AS INTEGER) + 1 RETURNING CAST(value AS INTEGER)"
    ).fetchone()
    return int(row[0])


def _recheck(db: sqlite3.Connection, registry: Registry, recheck: Recheck) -> None:
    """Recompute the min/max of the rows that lost values, one statement per distribution
    and grouping."""
    rows: dict[tuple[str, str], list[list[object]]] = {}
    for (metric, by, key, win, start), lost in recheck.items():
        size = WINDOWS[win]
        lo, hi = (start, start + size) if size else (-ALL_TIME_END, ALL_TIME_END)
        row: list[object] = [by, win, start, key, ONE_WRITER, lo, hi, *lost, *registry.key_values(by, key)]
        rows.setdefault((metric, by), []).append(row)
    for (metric, by), batch in rows.items():
        dims = registry.grouping(by).dimensions
        src = sqlgen.RECHECKED[metric]
        sql = RECHECK.format(
            # a source's key may lack an optional value (NULL: `Registry.sources`)
            where=" AND ".join(
                f"{d} {'IS' if registry.dimension(d).optional else '='} r.d{i}" for i, d in enumerate(dims)
            ),
            dims="".join(f", value->>{9 + i} AS d{i}" for i in range(len(dims))),
            c=registry.metric(metric).column,
            table=src.table,
            t=src.time,
        )
        db.execute(sql, (orjson.dumps(batch),))


def _commit_partition(db: sqlite3.Connection, p: PartitionCommit) -> None:
    if p.snapshot is not None:  # it holds every change so far: the log starts afresh
        db.execute("DELETE FROM conversation_snapshot_chunks WHERE partition=?", (p.partition,))
        db.executemany(
            "INSERT INTO conversation_snapshot_chunks VALUES (?,?,?)",
            [(p.partition, i, chunk) for i, chunk in enumerate(p.snapshot)],
        )
        db.execute("DELETE FROM conversation_log WHERE partition=?", (p.partition,))
        db.execute("DELETE FROM conversations WHERE partition=?", (p.partition,))
    elif p.conversations or p.expired:
        db.executemany(
            "INSERT INTO conversation_log (partition, changed, expired) VALUES (?,?,?)",
            [(p.partition, *row) for row in log_rows(p.conversations.chunks, p.expired)],
        )
    db.execute(
        "INSERT OR REPLACE INTO offsets VALUES (?,?,?)",
        (p.partition, p.next_offset, p.watermark),
    )


def _json(rows: list[Any], columns: int) -> bytes:
    return orjson.dumps(rows)


def _pack(rows: list[Any], columns: int) -> bytes:
    assert native is not None  # the compiled bins functions are registered: it is built
    packed: bytes = native.pack_rows(rows, columns)
    return packed
