"""The PostgreSQL store's aggregation of a commit's facts, in SQL (as the SQLite store does).

A commit's facts (`consumer.fold.delta.Fact`) and ingest-lag partials
(`consumer.fold.delta.Lags`) go into temporary tables (one `unnest` per partition), and
the statements `consumer.store.sqlgen` generates from the registry add them to
`metric_rows` and `metric_bins` on the server. Each row is keyed by its partition, which
one consumer owns: concurrent commits never write the same row. The Python side only
reshapes lists into columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg

from consumer.fold.delta import CLOSURE_KEY, layout_of
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.windows import WINDOWS
from consumer.store import sqlgen
from consumer.store.base import PartitionCommit
from consumer.store.postgres.sql import ALL_TIME_END, RECHECK


@dataclass(frozen=True)
class _Statements:
    temp: str
    stage_facts: str
    aggregate: list[str]
    fact_width: int


@cache
def _statements(registry: Registry) -> _Statements:
    fields = layout_of(registry).fields
    text = {d.name for d in registry.dimensions if d.type is str}
    types = ", ".join(f"%s::{'text' if f in text else 'bigint'}[]" for f in fields)
    return _Statements(
        ";\n".join(sqlgen.staging(sqlgen.POSTGRES, registry)),
        f"INSERT INTO cm_facts SELECT %s, %s, * FROM unnest({types})",
        sqlgen.aggregation(sqlgen.POSTGRES, registry),
        len(fields),
    )


_STAGE_LAGS = (
    "INSERT INTO cm_partial_lag SELECT %s, %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], "
    "%s::bigint[], %s::bigint[])"
)
_STAGE_LAG_BINS = (
    "INSERT INTO cm_partial_lag_bins SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], "
    "%s::bigint[])"
)


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values as `width` lists, the shape `unnest` takes."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def aggregate(
    conn: psycopg.Connection[Any], partitions: list[PartitionCommit], registry: Registry = REGISTRY
) -> bool:
    """Add the partitions' facts and lags to the metric tables; False when there were none.
    A partition's rows take its offset after this commit as their seq (the outbox's order)."""
    if not any(p.delta.facts or p.delta.lags for p in partitions):
        return False
    sql = _statements(registry)
    conn.execute(sql.temp)
    for p in partitions:
        seq = p.next_offset
        if p.delta.facts:
            conn.execute(sql.stage_facts, [p.partition, seq, *columns(p.delta.facts, sql.fact_width)])
        if p.delta.lags:
            lags = [(ch, h, n, s, mx) for (ch, h), (n, s, mx, _) in p.delta.lags.items()]
            conn.execute(_STAGE_LAGS, [p.partition, seq, *columns(lags, 5)])
            bins = [(ch, h, b, n) for (ch, h), (*_, bs) in p.delta.lags.items() for b, n in bs.items()]
            conn.execute(_STAGE_LAG_BINS, [p.partition, *columns(bins, 4)])
    for statement in sql.aggregate:
        conn.execute(statement)
    return True


class Batch:
    """One commit's closures, first assignments and offsets as sorted, merged columns (unnest
    wants one value per key); the metric rows are aggregated on the server
    (`consumer.store.postgres.aggregate`)."""

    def __init__(self, partitions: list[PartitionCommit], registry: Registry = REGISTRY) -> None:
        closures: dict[int, tuple[Any, ...]] = {}
        self.recheck: set[tuple[str, int, str, str, str, int]] = set()
        firsts: dict[tuple[int, int], tuple[Any, ...]] = {}
        for p in partitions:
            for closure in p.delta.closures.values():
                closures[closure[0]] = closure
            for metric in sqlgen.RECHECKED:
                self.recheck.update((metric, p.partition, *k) for k in p.delta.recheck(registry, metric))
            firsts.update(p.delta.first_assignments)
        self.closures = sorted(closures.values(), key=CLOSURE_KEY)
        self.first_assignments = [firsts[k] for k in sorted(firsts)]
        self.offsets = sorted((p.partition, p.next_offset, p.watermark) for p in partitions)

    def rechecks(self, registry: Registry) -> list[tuple[str, tuple[Any, ...]]]:
        """(RECHECK's statement, arguments) of each row whose min/max of a distribution must
        be recomputed from its source table."""
        out = []
        for metric, part, by, key, win, start in sorted(self.recheck):
            size = WINDOWS[win]
            lo, hi = (start, start + size) if size else (-ALL_TIME_END, ALL_TIME_END)
            where, keys = sqlgen.key_filter(registry, by, key, "%s")
            src = sqlgen.RECHECKED[metric]
            sql = RECHECK.format(where=where, c=registry.metric(metric).column, table=src.table, t=src.time)
            out.append((sql, (*keys, lo, hi, part, by, win, start, key, part)))
        return out
