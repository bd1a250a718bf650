"""The PostgreSQL store's metric rows and gauges of a commit: its facts, ingest-lag partials
and gauge changes rolled up on the client (`consumer.store.rollup`: one row per grouping,
window, start and key), copied into a temporary table (binary COPY tuples, made by the
compiled rollup; the reference rollup's rows one by one where it is not built), and added
to `metric_rows` by one upsert (the facts' rows, then the lags' in a second round), their
sketch bins in them (two arrays, merged by `sqlgen.BINS_MERGE`), and to `backlog` by
another. Each row is keyed by its partition, which one consumer owns: concurrent commits
never write the same row.

The upserts are the commit's cost, so the rows they write are as few as can be: a table of
bins (one row per row and bin) more than doubled them (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg

from consumer.fold.delta import CLOSURE_KEY
from consumer.fold.native import native
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.windows import WINDOWS
from consumer.store import sqlgen
from consumer.store.base import PartitionCommit
from consumer.store.postgres.sql import ALL_TIME_END, RECHECK
from consumer.store.rollup import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    Plan,
    compiled_facts,
    copy_tuples,
    gauge_changes,
    gauge_plan,
    lag_facts,
    lag_plan,
    plan_of,
    rollup,
)


@dataclass(frozen=True)
class _Statements:
    temp: str
    upsert: str
    #: the gauges' (None: the registry has none)
    gauges_temp: str | None
    gauges_upsert: str | None


def _temp(table: str, columns: Sequence[str]) -> str:
    """A temporary table of a plan's rolled-up rows, as `copy_tuples` lays them out."""
    values = "".join(f"{c} BIGINT, " for c in columns)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {table} (by TEXT, win TEXT, start BIGINT, key TEXT, "
        f"partition INTEGER, {values}seq BIGINT, bin_ids BIGINT[], bin_ns BIGINT[]) ON COMMIT DELETE ROWS"
    )


@cache
def _statements(registry: Registry) -> _Statements:
    cols = ", ".join((*sqlgen.ROW_KEY, *registry.value_columns, "seq", "bin_ids", "bin_ns"))
    gauges = [g.column for g in registry.gauges]
    return _Statements(
        _temp("cm_rolled", registry.value_columns),
        f"INSERT INTO metric_rows AS r ({cols}) SELECT {cols} FROM cm_rolled"
        + sqlgen.on_conflict(sqlgen.POSTGRES, registry),
        _temp("cm_gauges", gauges) if gauges else None,
        sqlgen.backlog_upsert(sqlgen.POSTGRES, registry) if gauges else None,
    )


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values as `width` lists, the shape `unnest` takes."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


#: (partition, seq, facts) of the partitions with something to roll up in a plan
_Parts = list[tuple[int, int, Sequence[Any]]]


def aggregate(
    conn: psycopg.Connection[Any],
    partitions: list[PartitionCommit],
    registry: Registry = REGISTRY,
    purged: Mapping[str, int] | None = None,
) -> None:
    """Add the partitions' facts and lags to the metric rows, and their gauge changes to the
    backlog. A partition's rows take its offset after this commit as their seq (the
    outbox's order). No row of a window below `purged` is written (`sqlgen.purged`)."""
    ordered = sorted(partitions, key=lambda p: p.partition)
    sql = _statements(registry)
    if sql.gauges_temp is not None and sql.gauges_upsert is not None:
        changed: _Parts = [(p.partition, p.next_offset, gauge_changes([p.delta.gauges])) for p in ordered]
        if gauges := [part for part in changed if part[2]]:
            conn.execute(sql.gauges_temp)
            _copy(conn, "cm_gauges", gauge_plan(registry), gauges)
            conn.execute(sql.gauges_upsert)
    rounds: list[tuple[Plan, _Parts]] = [
        (plan_of(registry), [(p.partition, p.next_offset, p.delta.facts) for p in ordered if p.delta.facts])
    ]
    if (lags := lag_plan(registry)) is not None:
        rounds.append(
            (lags, [(p.partition, p.next_offset, lag_facts(p.delta.lags)) for p in ordered if p.delta.lags])
        )
    rounds = [(plan, parts) for plan, parts in rounds if parts]
    if not rounds:
        return
    # no row of a window a purge deleted is made again
    retained = sqlgen.retained(purged or {})
    upsert = sql.upsert.replace(" FROM cm_rolled", f" FROM cm_rolled WHERE {retained}", 1)
    conn.execute(sql.temp)
    for i, (plan, parts) in enumerate(rounds):
        if i:  # a lag row may be a fact row too: one upsert must not change a row twice
            conn.execute("TRUNCATE cm_rolled")
        _copy(conn, "cm_rolled", plan, parts)
        conn.execute(upsert)


def _copy(conn: psycopg.Connection[Any], table: str, plan: Plan, parts: _Parts) -> None:
    """The partitions' rows into `table` (each partition's apart: rows are keyed by it), as
    binary COPY tuples from the compiled rollup, or the reference's rows one at a time."""
    (_copy_compiled if native is not None else _copy_reference)(conn, table, plan, parts)


def _copy_compiled(conn: psycopg.Connection[Any], table: str, plan: Plan, parts: _Parts) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_SIGNATURE)
        for partition, seq, facts in parts:
            for rows in copy_tuples(compiled_facts(facts, plan.width), plan, partition, seq):
                copy.write(rows)
        copy.write(COPY_TRAILER)


def _copy_reference(conn: psycopg.Connection[Any], table: str, plan: Plan, parts: _Parts) -> None:
    rows = (
        (
            by,
            win,
            start,
            key,
            partition,
            *values,
            seq,
            [b for b, _ in pairs] or None,
            [n for _, n in pairs] or None,
        )
        for partition, seq, facts in parts
        for by, win, start, key, *values, pairs in rollup(facts, plan)
    )
    copy_in(conn, f"COPY {table} FROM STDIN", rows)


def copy_in(
    conn: psycopg.Connection[Any], copy: str, rows: Iterable[Sequence[Any]], binary: Sequence[str] = ()
) -> None:
    """Rows in by `copy` (a COPY ... FROM STDIN): as text, or binary of these types."""
    with conn.cursor() as cur, cur.copy(copy) as out:
        if binary:
            out.set_types(binary)
        for row in rows:
            out.write_row(row)


class Batch:
    """One commit's closures, first assignments and offsets, sorted, one per key (an upsert
    must not change a row twice), and its min/max rechecks; the metric rows and gauges are
    rolled up by `aggregate`."""

    def __init__(self, partitions: list[PartitionCommit], registry: Registry = REGISTRY) -> None:
        closures: dict[int, tuple[Any, ...]] = {}
        #: (metric, partition, grouping, key, window, start) -> the least and greatest lost value
        self.recheck: dict[tuple[str, int, str, str, str, int], tuple[int, int]] = {}
        firsts: dict[tuple[int, int], tuple[Any, ...]] = {}
        for p in partitions:
            for closure in p.delta.closures.values():
                closures[closure[0]] = closure
            for metric in sqlgen.RECHECKED:
                for (by, key, win, start), (lo, hi) in p.delta.recheck(registry, metric).items():
                    self.recheck[(metric, p.partition, by, key, win, start)] = (lo, hi)
            firsts.update(p.delta.first_assignments)
        self.closures = sorted(closures.values(), key=CLOSURE_KEY)
        self.first_assignments = [firsts[k] for k in sorted(firsts)]
        self.offsets = sorted((p.partition, p.next_offset, p.watermark) for p in partitions)

    def rechecks(self, registry: Registry) -> list[tuple[str, list[Any]]]:
        """(RECHECK's statement, arguments) per distribution and grouping with rows whose
        min/max must be recomputed from its source table."""
        rows: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for (metric, part, by, key, win, start), (least, greatest) in sorted(self.recheck.items()):
            size = WINDOWS[win]
            lo, hi = (start, start + size) if size else (-ALL_TIME_END, ALL_TIME_END)
            row = (win, start, key, part, lo, hi, least, greatest, *registry.key_values(by, key))
            rows.setdefault((metric, by), []).append(row)
        out = []
        for (metric, by), batch in rows.items():
            dims = registry.grouping(by).dimensions
            src = sqlgen.RECHECKED[metric]
            sql = RECHECK.format(
                c=registry.metric(metric).column,
                table=src.table,
                t=src.time,
                # a source's key may lack an optional value (NULL: `Registry.sources`)
                where=" AND ".join(
                    f"s.{d} {'IS NOT DISTINCT FROM' if registry.dimension(d).optional else '='} r.d{i}"
                    for i, d in enumerate(dims)
                ),
                types="".join(
                    f", %s::{'text' if registry.dimension(d).type is str else 'bigint'}[]" for d in dims
                ),
                dims="".join(f", d{i}" for i in range(len(dims))),
            )
            out.append((sql, [*columns(batch, 8 + len(dims)), by]))
        return out
