"""The PostgreSQL store's tables: made, widened and migrated once per database and registry.

The DDL runs under the schema lock taken exclusively, which waits for every commit in
flight and holds back every commit after it (commits take it shared, so that DDL never
deadlocks with their row and table locks). So it runs only where `meta` lacks the
registry's stamp (a digest of its DDL): a consumer, `serve` or a writer thread opening a
store that is up to date reads one row and takes no lock, and never makes the other
consumers' commits wait.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg
from psycopg.sql import Identifier

from consumer.fold.registry import APP, Registry
from consumer.store import sqlgen, store_format, upgrade
from consumer.store.postgres.sql import (
    APP_INDEX,
    MIGRATE_BINS,
    MIGRATE_CLOSURES_KEY,
    MIGRATE_PARTITION,
    ROWS_FILLFACTOR,
    ROWS_STATISTICS,
    SCHEMA,
    SCHEMA_LOCK,
)

log = logging.getLogger(__name__)


def runner(conn: psycopg.Connection[Any]) -> upgrade.Run:
    """`upgrade.Run` over a connection: a statement's rows, none for one without."""

    def run(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else []

    return run


def ensure_schema(conn: psycopg.Connection[Any], registry: Registry, where: str) -> None:
    """Make the tables `registry` needs in `conn`'s transaction, unless stamped as made."""
    ddl = _ddl(registry, conn.info.server_version)
    migrations = [MIGRATE_PARTITION, MIGRATE_CLOSURES_KEY, MIGRATE_BINS]
    made = [*ddl, *migrations, f"format {store_format.FORMAT}"]
    stamp = "schema " + hashlib.sha256("\n".join(made).encode()).hexdigest()[:16]

    run = runner(conn)

    def refuse_newer() -> None:
        """Before anything of this release is made or migrated (a new database: no `meta`)."""
        if _has_meta(conn):
            store_format.check(run, "%s", where)

    refuse_newer()

    def done() -> bool:
        return (
            _stamped(conn, stamp)
            and not _bins_table(conn)
            and not upgrade.pending(registry, run, "%s")
            and not upgrade.renames_pending(registry, run, "%s")
        )

    if done():
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    refuse_newer()  # again: a newer release may have migrated while this one waited
    if done():  # made by another process while this one waited
        return
    for sql in ddl:
        conn.execute(sql)
    have = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'metric_rows' AND table_schema = current_schema()"
        )
    }
    if "partition" not in have:
        log.info("store %s: keying metric rows by partition (once)", where)
        conn.execute(MIGRATE_PARTITION)
    if _bins_table(conn):  # also one that a process of an older release made again
        log.info("store %s: moving the sketch bins of metric_bins into their rows", where)
        conn.execute(MIGRATE_BINS)
    key = conn.execute(
        "SELECT c.conname, array_agg(a.attname::text ORDER BY a.attnum) FROM pg_constraint AS c "
        "JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
        "WHERE c.conrelid = to_regclass('closures') AND c.contype = 'p' GROUP BY c.conname"
    ).fetchone()
    if key is not None and key[1] == ["event_hash"]:
        log.info("store %s: keying closures by account and time (once)", where)
        conn.execute(MIGRATE_CLOSURES_KEY.format(constraint=Identifier(key[0]).as_string(conn)))
    for sql in sqlgen.missing_columns(sqlgen.POSTGRES, have | {"partition"}, registry):
        conn.execute(sql)
    # before drop_doubled_rows: it reads the source's rows
    if upgrade.renames_pending(registry, run, "%s"):
        upgrade.rename(registry, run, "%s", where)
    upgrade.drop_doubled_rows(registry, run, "%s", where)
    store_format.stamp(run, "%s")
    # one stamp per registry: DDL only ever adds, so a stamp stays true when another
    # registry's tables or columns are added after it
    conn.execute("INSERT INTO meta VALUES (%s, '') ON CONFLICT (name) DO NOTHING", (stamp,))


def _ddl(registry: Registry, server_version: int) -> list[str]:
    """The DDL `registry` needs on a server of this version (each statement idempotent)."""
    ddl = [SCHEMA]
    if any(g.dimensions == (APP,) for g in registry.stored):
        ddl.append(APP_INDEX)
    ddl.append(sqlgen.row_table(sqlgen.POSTGRES, registry))
    ddl.append(ROWS_FILLFACTOR)
    if server_version >= 120000:  # `mcv` statistics came with PostgreSQL 12: older servers plan without them
        ddl.append(ROWS_STATISTICS)
    if (backlog := sqlgen.backlog_table(sqlgen.POSTGRES, registry)) is not None:
        ddl += [backlog, sqlgen.backlog_seq(sqlgen.POSTGRES)]
    return ddl


def _bins_table(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database has a metric_bins table (made before the bins lived in their
    rows, or again by a process of such a release)."""
    row = conn.execute("SELECT to_regclass('metric_bins') IS NOT NULL").fetchone()
    return row is not None and bool(row[0])


def _has_meta(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    return row is not None and bool(row[0])


def _stamped(conn: psycopg.Connection[Any], stamp: str) -> bool:
    """Whether `meta` holds the stamp (False before there is a `meta` table)."""
    if not _has_meta(conn):
        return False
    return conn.execute("SELECT 1 FROM meta WHERE name = %s", (stamp,)).fetchone() is not None
