"""PostgreSQL store: one database shared by consumer processes on several machines.

Same tables and semantics as the SQLite store. What sharing adds:
- a commit locks its partitions' `owners` rows (SELECT ... FOR UPDATE, in partition
  order) before anything else, so a concurrent `claim` serializes against it: either the
  commit lands first and the new owner loads it, or the claim lands first and the commit
  is refused with `FencedError`;
- metric rows are upserted additively (INSERT ... ON CONFLICT DO UPDATE is atomic), the
  commit's facts rolled up on the client and copied in (`consumer.store.postgres.aggregate`);
  rows are keyed by partition, so two consumers' commits never write the same row; a
  deadlock or serialization failure is retried anyway;
- a lost connection surfaces as `StoreUnavailableError` (transient: the caller retries
  the same commit; the store reconnects by itself on the next call). A retried commit
  whose offsets are already stored landed before the connection broke (its COMMIT was
  not acknowledged): it is skipped, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cached_property, partial
from typing import Any

import psycopg

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
from consumer.store.postgres.aggregate import Batch
from consumer.store.postgres.commit import purged_horizons, write
from consumer.store.postgres.schema import ensure_schema, runner
from consumer.store.postgres.session import IDLE_IN_TRANSACTION_TIMEOUT_S, Session, retrying
from consumer.store.postgres.sql import (
    SCHEMA_LOCK,
)
from consumer.store.rows import backlog_filter, bins_filter, build_rows, newest_start, rank_rows, row_filter


class PostgresStore:
    """The `Store` on PostgreSQL (psycopg 3, one connection). One per thread."""

    #: conversations are kept as a log plus snapshots: send `PartitionCommit.snapshot` now and then
    wants_snapshots = True

    def __init__(
        self,
        url: str,
        *,
        retention: Retention | None = None,
        connect_timeout: float = 5,
        race_retries: int = 5,
        registry: Registry = REGISTRY,
        idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT_S,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        #: called with what is retried, at each retry of a claim or load (`retrying`)
        self.on_retry = on_retry
        #: the metrics this store holds (its columns and SQL follow from it)
        self.registry = registry
        self.retention = retention or Retention()
        self.session = Session(url, connect_timeout, race_retries, idle_in_transaction_timeout)
        self._outbox_indexed = False
        self.session.run(lambda conn: ensure_schema(conn, self.registry, self._where))

    # -- ownership --------------------------------------------------------------------
    def check_topic(self, topic: str) -> None:
        """A database holds one topic's metrics; refuse to mix another in."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO meta VALUES ('topic', %s) ON CONFLICT DO NOTHING", (topic,))
            row = conn.execute("SELECT value FROM meta WHERE name='topic'").fetchone()
            if row is not None and row[0] != topic:
                raise StoreError(
                    f"store {self._where} holds metrics of topic {row[0]!r}, not {topic!r}: "
                    "use one store per topic (a database each)"
                )

        self.session.run(work)

    def check_metric_set(self, name: str, *, switch: bool = False) -> None:
        folds = folded_set.identity(name, self.registry)

        def work(conn: psycopg.Connection[Any]) -> None:
            folded_set.check(runner(conn), "%s", folds, switch=switch, where=self._where)

        self.session.run(work)

    def check_format(self) -> None:
        self.session.run(lambda conn: store_format.check(runner(conn), "%s", self._where))

    def claim(self, topic: str, partition: int, owner: str) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "INSERT INTO owners VALUES (%s, 1, %s) ON CONFLICT (partition) DO UPDATE "
                "SET epoch = owners.epoch + 1, owner = excluded.owner RETURNING epoch",
                (partition, owner),
            ).fetchone()
            assert row is not None
            return int(row[0])

        return retrying(
            lambda: self.session.run(work), f"claim partition {partition}", on_retry=self.on_retry
        )

    def load_partition(self, topic: str, partition: int) -> PartitionState:
        def work(conn: psycopg.Connection[Any]) -> PartitionState:
            off = conn.execute(
                "SELECT next_offset, watermark FROM offsets WHERE partition=%s", (partition,)
            ).fetchone()
            convs = load_conversations(conn.execute, partition, "%s")
            return PartitionState(None if off is None else off[0], 0 if off is None else off[1], convs)

        return retrying(lambda: self.session.run(work), f"load partition {partition}", on_retry=self.on_retry)

    # -- commit -----------------------------------------------------------------------
    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        if not partitions:
            return
        batch = Batch(partitions, self.registry)
        self.session.run(lambda conn: write(conn, partitions, batch, self.registry, self._where))

    # -- reading ----------------------------------------------------------------------
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
            dialect=sqlgen.POSTGRES,
            registry=self.registry,
            contains=contains,
            keys=keys,
            parts=parts,
        )
        sql = sqlgen.query(sqlgen.POSTGRES, by, window, where, self.registry, metrics)

        def work(conn: psycopg.Connection[Any]) -> list[MetricRow]:
            found = conn.execute(sql, [*args, limit]).fetchall()
            if not found:
                return []
            starts, keys = {r[1] for r in found}, sorted({r[0] for r in found})
            bins = _bins(conn, self.registry, by, window, starts, keys, metrics)
            return build_rows(by, window, found, bins, self.registry, metrics)

        return self.session.run(work)

    def backlog(
        self, by: str, *, key: str | None = None, parts: Mapping[int, str] | None = None
    ) -> tuple[int | None, list[BacklogRow]]:
        where, args = backlog_filter(by, key, parts, sqlgen.POSTGRES)
        sql = sqlgen.backlog_query(sqlgen.POSTGRES, where, self.registry)

        def work(conn: psycopg.Connection[Any]) -> tuple[int | None, list[BacklogRow]]:
            newest = conn.execute("SELECT max(watermark) FROM offsets").fetchone()
            found = conn.execute(sql, args).fetchall() if self.registry.gauges else []
            return (None if newest is None else newest[0]), [tuple(r) for r in found]

        return self.session.run(work)

    def closure_list(self, listing: ClosureListing) -> list[ListedClosure]:
        def work(conn: psycopg.Connection[Any]) -> list[ListedClosure]:
            return list_closures(
                listing, sqlgen.POSTGRES, lambda sql, args: conn.execute(sql, args).fetchall()
            )

        return self.session.run(work)

    def newest_start(self, by: str, window: str) -> int | None:
        def work(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(
                newest_start(sqlgen.POSTGRES, self.registry, by, window), (by, window)
            ).fetchone()
            return None if row is None else row[0]

        return self.session.run(work)

    def rank(self, ranking: Ranking) -> tuple[list[MetricRow], int]:
        def work(conn: psycopg.Connection[Any]) -> tuple[list[MetricRow], int]:
            def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                return conn.execute(sql, args).fetchall()

            return rank_rows(
                ranking, self.registry, fetch, partial(_page, conn, self.registry), sqlgen.POSTGRES
            )

        return self.session.run(work)

    def purge(self) -> int:
        """Delete window rows older than their retention; returns rows deleted."""

        def work(conn: psycopg.Connection[Any]) -> int:
            newest = conn.execute("SELECT max(watermark) FROM offsets").fetchone()
            if newest is None or newest[0] is None:
                return 0
            deleted = 0
            published = conn.execute(outbox.PUBLISHED).fetchone() is not None
            bys = [r[0] for r in conn.execute(sqlgen.STORED_GROUPINGS)]
            keep_purged = outbox.with_marks(outbox.KEEP_PURGED, sqlgen.POSTGRES)
            purge_rows = outbox.with_marks(sqlgen.PURGE_ROWS, sqlgen.POSTGRES)
            now: dict[str, int] = {}
            for win in WINDOWS:
                keep = self.retention.for_window(win)
                if keep is None or win == ALL:
                    continue
                now[win] = newest[0] - keep
                for by in bys:  # a range of the primary key each (sqlgen.PURGE_ROWS)
                    if published:  # the metrics topics tombstone them (outbox.PURGED)
                        conn.execute(keep_purged, (by, win, now[win]))
                    deleted += conn.execute(purge_rows, (by, win, now[win])).rowcount
            conn.execute(outbox.FORGET_PURGED)
            if now:  # commits write no row below these (sqlgen.purged)
                conn.execute(
                    "INSERT INTO meta VALUES (%(name)s, %(value)s) "
                    "ON CONFLICT (name) DO UPDATE SET value = %(value)s",
                    {"name": sqlgen.PURGED_BEFORE, "value": sqlgen.advanced(purged_horizons(conn), now)},
                )
            return deleted

        return self.session.run(work)

    # -- the outbox of the metrics topic -----------------------------------------------
    def changed_since(
        self, marks: dict[int, int], commits: int = 20
    ) -> tuple[list[MetricRow], dict[int, int]]:
        """Rows the partitions of `marks` changed after their marks (whole commits, up to
        `commits` of each), merged over partitions, and the marks that covers."""
        if not self._outbox_indexed:
            # see OUTBOX_INDEX; DDL under the schema lock, like the schema itself, and only
            # where an index is missing (the lock holds back every other commit)
            indexes = outbox_indexes(self.registry)

            def index(conn: psycopg.Connection[Any]) -> None:
                for name, ddl in indexes.items():
                    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
                    if exists is not None and exists[0]:
                        continue
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(ddl)

            self.session.run(index)
            self._outbox_indexed = True

        def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return self.session.run(lambda conn: conn.execute(sql, args).fetchall())

        def page(*args: Any) -> list[MetricRow]:  # rows.Page, each in a transaction of its own
            return self.session.run(lambda conn: _page(conn, self.registry, *args))

        return changed_rows(marks, commits, fetch, page, sqlgen.POSTGRES, self.registry)

    def published_marks(self, partitions: list[int], topic: str = "") -> dict[int, int]:
        def work(conn: psycopg.Connection[Any]) -> dict[int, int]:
            sql = "SELECT partition, seq FROM published_marks WHERE topic = %s"
            found = dict(conn.execute(sql, (topic,)).fetchall())
            return {p: int(found.get(p, 0)) for p in partitions}

        return self.session.run(work)

    def purged_since(self, topic: str) -> tuple[list[tuple[str, str, int, str]], int]:
        def work(conn: psycopg.Connection[Any]) -> tuple[list[tuple[str, str, int, str]], int]:
            found = conn.execute(
                "SELECT seq FROM published_marks WHERE topic = %s AND partition = %s", (topic, outbox.PURGED)
            ).fetchone()

            def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                return conn.execute(sql, args).fetchall()

            mark = 0 if found is None else int(found[0])
            return outbox.purged_keys(mark, fetch, sqlgen.POSTGRES, self.registry)

        return self.session.run(work)

    def mark_purged_published(self, topic: str, mark: int) -> None:
        self.mark_published({outbox.PURGED: mark}, topic)

    def mark_published(self, marks: dict[int, int], topic: str = "") -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO published_marks VALUES (%s, %s, %s) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET seq = greatest(published_marks.seq, excluded.seq)",
                    [(topic, p, seq) for p, seq in sorted(marks.items())],
                )

        self.session.run(work)

    def close(self) -> None:
        self.session.reconnect()

    @cached_property
    def _where(self) -> str:
        """The store as its messages name it (no password): parsed once, at the first."""
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"


def _page(
    conn: psycopg.Connection[Any],
    registry: Registry,
    by: str,
    window: str,
    keys: list[str],
    starts: Collection[int],
    metrics: Collection[str] | None,
) -> list[MetricRow]:
    """`rows.Page`: the merged rows, then their bins (`rows.bins_filter`)."""
    d = sqlgen.POSTGRES
    sql, bounds = sqlgen.page(d, registry, by, window, starts, keys, metrics)
    found = conn.execute(sql, (by, window, d.list_arg(keys), *bounds)).fetchall()
    bins = _bins(conn, registry, by, window, starts, keys, metrics)
    return build_rows(by, window, found, bins, registry, metrics)


def _bins(
    conn: psycopg.Connection[Any],
    registry: Registry,
    by: str,
    window: str,
    starts: Collection[int],
    keys: Collection[str],
    metrics: Collection[str] | None,
) -> Iterable[Any]:
    """The bins of some rows (`rows.bins_filter`), or none where the metrics read have no
    distribution (`Registry.sketched`)."""
    if not registry.sketched(metrics):
        return ()
    return conn.execute(*bins_filter(registry, by, window, starts, keys))
