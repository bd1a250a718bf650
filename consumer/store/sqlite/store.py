"""SQLite store: embedded, one file, WAL; several processes may share it."""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from consumer.exceptions import StoreError
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.windows import ALL, WINDOWS
from consumer.store import folded_set, outbox, sqlgen, store_format
from consumer.store.base import (
    BacklogRow,
    MetricRow,
    PartitionCommit,
    PartitionState,
    Ranking,
    Retention,
)
from consumer.store.closure_list import ClosureListing, ListedClosure, list_closures
from consumer.store.conversation_log import load_conversations
from consumer.store.outbox import changed_rows, outbox_indexes
from consumer.store.rows import backlog_filter, metric_row, newest_start, rank_rows, row_filter
from consumer.store.sqlite.bins import install, register, unpack
from consumer.store.sqlite.commit import ONE_WRITER, prepare, purged_horizons, write
from consumer.store.sqlite.migrate import (
    Transaction,
    migrate_backlog,
    migrate_bins,
    migrate_closures,
    migrate_derived,
    migrate_partition,
    migrate_renamed,
    runner,
)
from consumer.store.sqlite.sql import (
    OLD_CLOSURES_INDEX,
    SCHEMA,
    statements,
)
from consumer.store.sqlite.wal import WRITER_AUTOCHECKPOINT, WalCheckpointer

log = logging.getLogger(__name__)


#: the connection's settings, before its tables are made: a write-ahead log, synced at its
#: checkpoints, and 8 MiB of page cache (it counts in the RSS budget); bench/facts_table.py
#: opens its databases with them too
CONNECTION_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-8192")

P = ParamSpec("P")
R = TypeVar("R")


def _reading(method: Callable[Concatenate[SqliteStore, P], R]) -> Callable[Concatenate[SqliteStore, P], R]:
    """A read of the store: a database it cannot read any more (a file corrupted or replaced
    under a running `serve`, an I/O error) is a StoreError naming it, which the API answers
    with a 503 and `/readyz` with not ready, as when the store cannot be opened. Misuse of
    the driver (`ProgrammingError`) is a bug and stays one."""

    def read(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read SQLite store {self.path!r}: {exc}") from exc

    functools.update_wrapper(read, method)  # its name and docstring
    return read


class SqliteStore:
    """The `Store` on SQLite. Thread-compatible, not thread-safe: one per thread."""

    #: conversations are kept as a log plus snapshots: send `PartitionCommit.snapshot` now and then
    wants_snapshots = True

    def __init__(
        self, path: str, *, retention: Retention | None = None, registry: Registry = REGISTRY
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        #: the metrics this store holds (its columns and SQL follow from it)
        self.registry = registry
        self.sql = statements(registry)
        self._outbox_indexed = False
        try:
            install()  # before connecting: SQLite adds the compiled bins functions to new connections
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            #: `upgrade.Run` over the connection (the checks and migrations shared with PostgreSQL)
            self.run = runner(self.db)
            for pragma in CONNECTION_PRAGMAS:
                self.db.execute(f"PRAGMA {pragma}")
            # the WAL is copied back by a thread of its own (`wal`), every few commits, so
            # that pages rewritten by several commits in between (all-time rows, busy
            # conversations) are copied back once and not on the writer's thread; the
            # writer's own autocheckpoint is the backstop
            self.db.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
            self.checkpointer = WalCheckpointer(path)
            self.db.execute("PRAGMA busy_timeout=60000")
            #: which bins functions the connection runs: "native" (compiled, and commits stage
            #: packed rows for their packed_rows table) or "python" (commits stage JSON)
            self.bins_functions = register(self.db)
            self.db.executescript(SCHEMA)
            # refused before anything of this release is made or migrated
            store_format.check(self.run, "?", self.path)
            self.db.execute(self.sql.rows)
            if (backlog := sqlgen.backlog_table(sqlgen.SQLITE, self.registry)) is not None:
                self.db.execute(backlog + " WITHOUT ROWID")
            migrate_bins(self.db, self.path)
            closures = self.db.execute("SELECT sql FROM sqlite_master WHERE name = 'closures'").fetchone()[0]
            if "WITHOUT ROWID" not in closures.upper():  # a store made before the table was keyed by account
                self.db.execute(OLD_CLOSURES_INDEX)
            migrate_partition(self.db, self.path, self.registry)
            migrate_closures(self.db, self.path, self.registry)
            migrate_backlog(self.db, self.path, self.registry)
            migrate_renamed(self.db, self.path, self.registry)  # before: it reads the source's rows
            migrate_derived(self.db, self.path, self.registry)
            store_format.stamp(self.run, "?")
            # temporary B-trees (sorts) go to a temporary file (its pages live in the OS
            # cache, not the heap): in memory they held the peak RSS up, for little commit
            # CPU saved (docs/performance.md)
            self.db.execute("PRAGMA temp_store=FILE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from exc

    def check_topic(self, topic: str) -> None:
        """A store holds one topic's metrics; refuse to mix another in."""
        with self._tx():
            row = self.db.execute("SELECT value FROM meta WHERE name='topic'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('topic', ?)", (topic,))
            elif row[0] != topic:
                raise StoreError(
                    f"store {self.path} holds metrics of topic {row[0]!r}, not {topic!r}: "
                    "use one store per topic"
                )

    def check_metric_set(self, name: str, *, switch: bool = False) -> None:
        with self._tx():
            folds = folded_set.identity(name, self.registry)
            folded_set.check(self.run, "?", folds, switch=switch, where=str(self.path))

    @_reading
    def check_format(self) -> None:
        store_format.check(self.run, "?", self.path)

    def claim(self, topic: str, partition: int, owner: str) -> int:
        with self._tx():
            row = self.db.execute(
                "INSERT INTO owners VALUES (?, 1, ?) ON CONFLICT DO UPDATE "
                "SET epoch = epoch + 1, owner = excluded.owner RETURNING epoch",
                (partition, owner),
            ).fetchone()
        return int(row[0])

    def load_partition(self, topic: str, partition: int) -> PartitionState:
        db = self.db
        off = db.execute(
            "SELECT next_offset, watermark FROM offsets WHERE partition=?", (partition,)
        ).fetchone()
        convs = load_conversations(db.execute, partition, "?")
        return PartitionState(None if off is None else off[0], 0 if off is None else off[1], convs)

    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        # the payloads are made before the write lock is taken (`commit.prepare`; the
        # compiled rollup's rows, metric rows and gauges, as they are written, to hold one
        # target's at a time)
        packed = self.bins_functions == "native"  # packed_rows is registered with them
        prepared = prepare(partitions, self.registry, self.sql, packed)
        with self._tx():
            store_format.check(self.run, "?", self.path, committing=True)
            write(self.db, partitions, prepared, self.registry, self.sql)
        self.checkpointer.committed()

    @_reading
    def changed_since(
        self, marks: dict[int, int], commits: int = 20
    ) -> tuple[list[MetricRow], dict[int, int]]:
        """Rows the partitions of `marks` changed after their marks (whole commits, up to
        `commits` of each), merged over partitions, and the marks that covers."""
        if not self._outbox_indexed:
            for ddl in outbox_indexes(self.registry).values():
                self.db.execute(ddl)
            self._outbox_indexed = True

        def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return self.db.execute(sql, args).fetchall()

        return changed_rows(marks, commits, fetch, self._page, sqlgen.SQLITE, self.registry)

    @_reading
    def published_marks(self, partitions: list[int], topic: str = "") -> dict[int, int]:
        """One mark per topic for the whole store: its rows are all the one writer's."""
        found = self.db.execute(
            "SELECT seq FROM published_marks WHERE topic = ? AND partition = ?", (topic, ONE_WRITER)
        ).fetchone()
        return {ONE_WRITER: 0 if found is None else int(found[0])}

    @_reading
    def purged_since(self, topic: str) -> tuple[list[tuple[str, str, int, str]], int]:
        found = self.db.execute(
            "SELECT seq FROM published_marks WHERE topic = ? AND partition = ?", (topic, outbox.PURGED)
        ).fetchone()

        def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return self.db.execute(sql, args).fetchall()

        return outbox.purged_keys(0 if found is None else int(found[0]), fetch, sqlgen.SQLITE, self.registry)

    def mark_purged_published(self, topic: str, mark: int) -> None:
        self.mark_published({outbox.PURGED: mark}, topic)

    def mark_published(self, marks: dict[int, int], topic: str = "") -> None:
        with self._tx():
            self.db.executemany(
                "INSERT INTO published_marks VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET seq = max(seq, excluded.seq)",
                [(topic, p, seq) for p, seq in marks.items()],
            )

    @_reading
    def query(
        self,
        by: str,
        window: str,
        *,
        key: str | None = None,
        start_from: int | None = None,
        start_to: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 10_000,
        contains: str | None = None,
        keys: Sequence[str] | None = None,
        parts: Mapping[int, str] | None = None,
        metrics: Collection[str] | None = None,
    ) -> list[MetricRow]:
        where, args = row_filter(
            by,
            window,
            key=key,
            start_from=start_from,
            start_to=start_to,
            after=after,
            dialect=sqlgen.SQLITE,
            registry=self.registry,
            contains=contains,
            keys=keys,
            parts=parts,
        )
        query = sqlgen.query(sqlgen.SQLITE, by, window, where, self.registry, metrics)
        found = self.db.execute(query, [*args, limit]).fetchall()
        names = self.registry.columns_of(metrics)
        return [metric_row(by, window, r[:-1], unpack(r[-1]), names) for r in found]

    @_reading
    def backlog(
        self, by: str, *, key: str | None = None, parts: Mapping[int, str] | None = None
    ) -> tuple[int | None, list[BacklogRow]]:
        newest: int | None = self.db.execute("SELECT max(watermark) FROM offsets").fetchone()[0]
        if not self.registry.gauges:
            return newest, []
        where, args = backlog_filter(by, key, parts, sqlgen.SQLITE)
        found = self.db.execute(sqlgen.backlog_query(sqlgen.SQLITE, where, self.registry), args).fetchall()
        return newest, [tuple(r) for r in found]

    @_reading
    def closure_list(self, listing: ClosureListing) -> list[ListedClosure]:
        return list_closures(listing, sqlgen.SQLITE, lambda sql, args: self.db.execute(sql, args).fetchall())

    @_reading
    def newest_start(self, by: str, window: str) -> int | None:
        sql = newest_start(sqlgen.SQLITE, self.registry, by, window)
        found: int | None = self.db.execute(sql, (by, window)).fetchone()[0]
        return found

    @_reading
    def rank(self, ranking: Ranking) -> tuple[list[MetricRow], int]:
        def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return self.db.execute(sql, args).fetchall()

        return rank_rows(ranking, self.registry, fetch, self._page, sqlgen.SQLITE)

    def _page(
        self, by: str, window: str, keys: list[str], starts: Collection[int], metrics: Collection[str] | None
    ) -> list[MetricRow]:
        """`rows.Page`: one query, the bins are in the rows."""
        d = sqlgen.SQLITE
        sql, bounds = sqlgen.page(d, self.registry, by, window, starts, keys, metrics)
        found = self.db.execute(sql, (by, window, d.list_arg(keys), *bounds))
        names = self.registry.columns_of(metrics)
        return [metric_row(by, window, r[:-1], unpack(r[-1]), names) for r in found]

    def purge(self) -> int:
        """Delete window rows older than their retention; returns rows deleted."""
        newest = self.db.execute("SELECT max(watermark) FROM offsets").fetchone()[0]
        if newest is None:
            return 0
        deleted = 0
        with self._tx():
            published = self.db.execute(outbox.PUBLISHED).fetchone() is not None
            bys = [r[0] for r in self.db.execute(sqlgen.STORED_GROUPINGS)]
            now: dict[str, int] = {}
            for win in WINDOWS:
                keep = self.retention.for_window(win)
                if keep is None or win == ALL:
                    continue
                now[win] = newest - keep
                for by in bys:  # a range of the primary key each (sqlgen.PURGE_ROWS)
                    if published:  # the metrics topics tombstone them (outbox.PURGED)
                        self.db.execute(outbox.KEEP_PURGED, (by, win, now[win]))
                    deleted += self.db.execute(sqlgen.PURGE_ROWS, (by, win, now[win])).rowcount
            self.db.execute(outbox.FORGET_PURGED)
            if now:  # commits write no row below these (sqlgen.purged)
                self.db.execute(
                    "INSERT INTO meta VALUES (?1, ?2) ON CONFLICT DO UPDATE SET value = ?2",
                    (sqlgen.PURGED_BEFORE, sqlgen.advanced(purged_horizons(self.db), now)),
                )
        return deleted

    def close(self) -> None:
        self.checkpointer.close()  # first: the last connection to close checkpoints the rest
        self.db.close()

    def _tx(self) -> Transaction:
        return Transaction(self.db)
