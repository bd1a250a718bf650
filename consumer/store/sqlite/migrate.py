"""Bringing a SQLite store written by an older release (or with fewer metrics) up to date,
once, at open, under the write lock (a second process opening it meanwhile finds it done)."""

from __future__ import annotations

import logging
import sqlite3

from consumer.fold.registry import APP, Registry
from consumer.store import sqlgen, store_format, upgrade
from consumer.store.sqlite.sql import (
    APP_INDEX,
    MIGRATE_BINS,
    MIGRATE_CLOSURE_IDS,
    MIGRATE_CLOSURES,
    statements,
)

log = logging.getLogger(__name__)


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (a crash rolls back too)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {col[1] for col in db.execute(f"PRAGMA table_info({table})")}


def migrate_bins(db: sqlite3.Connection, path: str) -> None:
    """A store written before bins lived in their rows gets them moved in."""
    if "bins" in columns(db, "metric_rows"):
        return
    with Transaction(db):
        if "bins" in columns(db, "metric_rows"):
            return
        log.info("store %s: moving sketch bins into their metric rows (once)", path)
        for sql in MIGRATE_BINS:
            db.execute(sql)


def migrate_closures(db: sqlite3.Connection, path: str, registry: Registry) -> None:
    """A store written before closures kept their inbox and app gets the columns (NULL for
    the closures before: they count in no inbox or app row), and one written before they
    kept their event id gets that column (NULL before: `consumer.store.closure_list`); the app index where the
    registry groups by app (its rows' min/max rechecks read it; each closure pays an
    index insert for it)."""
    if "app" not in columns(db, "closures"):
        with Transaction(db):
            if "app" not in columns(db, "closures"):
                log.info("store %s: closures keep their inbox and app from now on", path)
                for sql in MIGRATE_CLOSURES:
                    db.execute(sql)
    if "event_id" not in columns(db, "closures"):
        with Transaction(db):
            if "event_id" not in columns(db, "closures"):
                log.info("store %s: closures keep their event id from now on", path)
                db.execute(MIGRATE_CLOSURE_IDS)
    if any(g.dimensions == (APP,) for g in registry.stored):
        db.execute(APP_INDEX)


def migrate_partition(db: sqlite3.Connection, path: str, registry: Registry) -> None:
    """A store written before rows were keyed by partition keeps its rows as partition -1's
    (merged with the new ones at query time); registry columns a store lacks are added (0
    for the rows written before)."""
    if "partition" in columns(db, "metric_rows"):
        if sqlgen.missing_columns(sqlgen.SQLITE, columns(db, "metric_rows"), registry):
            with Transaction(db):
                for sql in sqlgen.missing_columns(sqlgen.SQLITE, columns(db, "metric_rows"), registry):
                    db.execute(sql)
        return
    with Transaction(db):
        if "partition" in columns(db, "metric_rows"):
            return
        log.info("store %s: keying metric rows by partition (once)", path)
        db.execute("ALTER TABLE metric_rows RENAME TO metric_rows_unpartitioned")
        old = columns(db, "metric_rows_unpartitioned")
        for sql in sqlgen.missing_columns(sqlgen.SQLITE, old, registry):
            db.execute(sql.replace("metric_rows", "metric_rows_unpartitioned", 1))
        db.execute(statements(registry).rows)
        cols = ", ".join(registry.value_columns)
        db.execute(
            f"INSERT INTO metric_rows (by, win, start, key, partition, {cols}, seq, bins) "
            f"SELECT by, win, start, key, -1, {cols}, 0, bins FROM metric_rows_unpartitioned"
        )
        db.execute("DROP TABLE metric_rows_unpartitioned")


def migrate_backlog(db: sqlite3.Connection, path: str, registry: Registry) -> None:
    """A backlog table made before its rows kept their commit's seq (the metrics topic's
    outbox) gets the column."""
    if not registry.gauges or "seq" in columns(db, "backlog"):
        return
    with Transaction(db):
        if "seq" not in columns(db, "backlog"):
            log.info("store %s: backlog rows keep their commit's seq from now on", path)
            db.execute(sqlgen.backlog_seq(sqlgen.SQLITE))


def runner(db: sqlite3.Connection) -> upgrade.Run:
    """`upgrade.Run` over a connection."""
    return lambda sql, args: db.execute(sql, args).fetchall()


def migrate_renamed(db: sqlite3.Connection, path: str, registry: Registry) -> None:
    """A store with rows under a former name (format 1's, or a release before's written
    since) gets them under their names of today (`consumer.store.upgrade.rename`) and is
    stamped format 2 in the same transaction."""
    run = runner(db)
    if not upgrade.renames_pending(registry, run, "?"):
        return
    with Transaction(db):
        if upgrade.renames_pending(registry, run, "?"):
            upgrade.rename(registry, run, "?", path)
            store_format.stamp(run, "?")


def migrate_derived(db: sqlite3.Connection, path: str, registry: Registry) -> None:
    """A grouping's own rows of the windows now read from its source, where a release
    before stored both (`consumer.store.upgrade.drop_doubled_rows`), once."""

    run = runner(db)
    if not upgrade.pending(registry, run, "?"):
        return
    with Transaction(db):
        upgrade.drop_doubled_rows(registry, run, "?", path)
