"""The PostgreSQL store's aggregation of a commit's facts, in SQL (as the SQLite store does).

A commit's facts (`consumer.fold.delta.Fact`) and ingest-lag partials
(`consumer.fold.delta.Lags`) go into temporary tables (one `unnest` per partition), and
the statements `consumer.store.sqlgen` generates from the registry add them to
`metric_rows` and `metric_bins` on the server. Each row is keyed by its partition, which
one consumer owns: concurrent commits never write the same row. The Python side only
reshapes lists into columns.
"""

from __future__ import annotations

from typing import Any

import psycopg

from consumer.fold.delta import FACT_FIELDS
from consumer.store import sqlgen
from consumer.store.base import PartitionCommit

_TEMP = ";\n".join(sqlgen.staging(sqlgen.POSTGRES))
_TYPES = ", ".join(
    f"%s::{'text' if f == 'channel_type' else 'bigint'}[]" for f in FACT_FIELDS
)
_STAGE_FACTS = f"INSERT INTO cm_facts SELECT %s, %s, * FROM unnest({_TYPES})"
_STAGE_LAGS = (
    "INSERT INTO cm_partial_lag SELECT %s, %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], "
    "%s::bigint[], %s::bigint[])"
)
_STAGE_LAG_BINS = (
    "INSERT INTO cm_partial_lag_bins SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], "
    "%s::bigint[])"
)
_AGGREGATE = sqlgen.aggregation(sqlgen.POSTGRES)


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values as `width` lists, the shape `unnest` takes."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def aggregate(conn: psycopg.Connection[Any], partitions: list[PartitionCommit]) -> bool:
    """Add the partitions' facts and lags to the metric tables; False when there were none.
    A partition's rows take its offset after this commit as their seq (the outbox's order)."""
    if not any(p.delta.facts or p.delta.lags for p in partitions):
        return False
    conn.execute(_TEMP)
    for p in partitions:
        seq = p.next_offset
        if p.delta.facts:
            conn.execute(_STAGE_FACTS, [p.partition, seq, *columns(p.delta.facts, len(FACT_FIELDS))])
        if p.delta.lags:
            lags = [(ch, h, n, s, mx) for (ch, h), (n, s, mx, _) in p.delta.lags.items()]
            conn.execute(_STAGE_LAGS, [p.partition, seq, *columns(lags, 5)])
            bins = [(ch, h, b, n) for (ch, h), (*_, bs) in p.delta.lags.items() for b, n in bs.items()]
            conn.execute(_STAGE_LAG_BINS, [p.partition, *columns(bins, 4)])
    for sql in _AGGREGATE:
        conn.execute(sql)
    return True
