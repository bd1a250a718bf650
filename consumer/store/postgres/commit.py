"""A PostgreSQL store's commit: what one transaction writes (`PostgresStore.commit` runs
it through `_run`, which retries lock races and reports lost connections)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from consumer.exceptions import FencedError
from consumer.fold.registry import Registry
from consumer.store import sqlgen, store_format
from consumer.store.base import PartitionCommit
from consumer.store.conversation_log import log_rows
from consumer.store.postgres.aggregate import Batch, aggregate, columns, copy_in
from consumer.store.postgres.schema import runner
from consumer.store.postgres.sql import (
    APPEND_CONVERSATION_LOG,
    APPEND_SNAPSHOT_CHUNKS,
    SCHEMA_LOCK,
    STAGE_CLOSURES,
    STAGE_FIRST_ASSIGNMENTS,
    STAGING,
    UPSERT_CLOSURES,
    UPSERT_FIRST_ASSIGNMENTS,
)

log = logging.getLogger(__name__)


def write(
    conn: psycopg.Connection[Any],
    partitions: list[PartitionCommit],
    batch: Batch,
    registry: Registry,
    where: str,
) -> None:
    """One commit of some partitions, in the caller's transaction: refused where a newer
    release upgraded the store (`store_format`), fenced (a newer owner's claim wins),
    skipped when its offsets are already stored (a retried commit that had landed), else
    every table and the offsets."""
    # the schema's DDL (CREATE INDEX IF NOT EXISTS locks its table even when the index
    # exists) takes this lock exclusively: a consumer starting up waits for commits in
    # flight instead of deadlocking with them over table locks taken in another order
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SCHEMA_LOCK,))
    # after the lock: a migration holding it has committed its format by now (READ
    # COMMITTED: this statement sees it), so no commit of an older release lands after it
    store_format.check(runner(conn), "%s", where, committing=True)
    ids = sorted({p.partition for p in partitions})
    epochs = dict(
        conn.execute(
            "SELECT partition, epoch FROM owners WHERE partition = ANY(%s) ORDER BY partition FOR UPDATE",
            (ids,),
        ).fetchall()
    )
    fenced = [p.partition for p in partitions if epochs.get(p.partition, 0) > p.epoch]
    if fenced:
        raise FencedError(fenced)
    stored = dict(
        conn.execute(
            "SELECT partition, next_offset FROM offsets WHERE partition = ANY(%s)", (ids,)
        ).fetchall()
    )
    if all(stored.get(p.partition, -1) >= p.next_offset for p in partitions):
        log.warning("commit up to offsets %s was already stored: skipped", batch.offsets)
        return
    if batch.closures or batch.first_assignments:
        conn.execute(STAGING)
    if batch.closures:
        copy_in(conn, STAGE_CLOSURES, batch.closures)
        conn.execute(UPSERT_CLOSURES)
    if batch.first_assignments:
        copy_in(conn, STAGE_FIRST_ASSIGNMENTS, batch.first_assignments)
        conn.execute(UPSERT_FIRST_ASSIGNMENTS)
    aggregate(conn, partitions, registry, purged_horizons(conn))
    with conn.cursor() as cur:
        for sql, params in batch.rechecks(registry):
            cur.execute(sql, params)
    for p in sorted(partitions, key=lambda p: p.partition):
        _conversations(conn, p)
    conn.execute(
        "INSERT INTO offsets SELECT * FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) "
        "ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset, "
        "watermark = excluded.watermark",
        columns(batch.offsets, 3),
    )


def purged_horizons(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Where the last purge left each window (`sqlgen.purged`). A commit that overlaps a
    purge may still write below the horizon that purge sets (it read the one before): the
    next purge deletes that row again (docs/operations.md)."""
    row = conn.execute("SELECT value FROM meta WHERE name = %s", (sqlgen.PURGED_BEFORE,)).fetchone()
    return sqlgen.horizons(None if row is None else row[0])


def _conversations(conn: psycopg.Connection[Any], p: PartitionCommit) -> None:
    """The partition's changed conversations into its log, or its snapshot in place of
    its log (consumer.store.conversation_log)."""
    if p.snapshot is not None:  # it holds every change so far: the log starts afresh
        conn.execute("DELETE FROM conversation_snapshot_chunks WHERE partition = %s", (p.partition,))
        chunks = ((p.partition, i, state) for i, state in enumerate(p.snapshot))
        copy_in(conn, APPEND_SNAPSHOT_CHUNKS, chunks, ("int4", "int4", "bytea"))
        conn.execute("DELETE FROM conversation_log WHERE partition = %s", (p.partition,))
        conn.execute("DELETE FROM conversations WHERE partition = %s", (p.partition,))
    elif p.conversations or p.expired:
        rows = ((p.partition, *row) for row in log_rows(p.conversations.chunks, p.expired))
        copy_in(conn, APPEND_CONVERSATION_LOG, rows, ("int4", "bytea", "bytea"))
