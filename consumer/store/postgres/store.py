"""PostgreSQL store: one database shared by consumer processes on several machines.

Same tables and semantics as the SQLite store. What sharing adds:
- a commit locks its partitions' `owners` rows (SELECT ... FOR UPDATE, in partition
  order) before anything else, so a concurrent `claim` serializes against it: either the
  commit lands first and the new owner loads it, or the claim lands first and the commit
  is refused with `FencedError`;
- metric rows are upserted additively (INSERT ... ON CONFLICT DO UPDATE is atomic), the
  commit's facts aggregated on the server, one statement per grouping and window in a
  fixed order, each in key order (`consumer.store.postgres.aggregate`), so two commits lock
  shared rows in the same order; a deadlock or serialization failure is retried anyway;
- a lost connection surfaces as `StoreUnavailableError` (transient: the caller retries
  the same commit; the store reconnects by itself on the next call). A retried commit
  whose offsets are already stored landed before the connection broke (its COMMIT was
  not acknowledged): it is skipped, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from consumer.exceptions import FencedError, StoreError, StoreUnavailableError
from consumer.fold.delta import CLOSURE_WIDTH, FIRST_ASSIGNMENT_WIDTH, gauge_rows
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.windows import ALL, WINDOWS
from consumer.store import sqlgen
from consumer.store.base import (
    OUTBOX_INDEX,
    OUTBOX_INDEX_NAME,
    BacklogRow,
    MetricRow,
    PartitionCommit,
    PartitionState,
    Ranking,
    Retention,
)
from consumer.store.closure_list import ClosureListing, ListedClosure, list_closures
from consumer.store.postgres.aggregate import Batch, aggregate, columns
from consumer.store.postgres.schema import ensure_schema
from consumer.store.postgres.sql import (
    SCHEMA_LOCK,
    UPSERT_CLOSURES,
    UPSERT_CONVERSATIONS,
    UPSERT_FIRST_ASSIGNMENTS,
)
from consumer.store.rows import (
    NEWEST_START,
    backlog_filter,
    bins_filter,
    build_rows,
    live_rows,
    outbox_keys,
    rank_rows,
    row_filter,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: retried inside the store: another transaction won a lock race
_RACES = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
#: a server that answered but is going down, starting up or full: try again later
_TRANSIENT_FATAL = ("starting up", "shutting down", "recovery mode", "too many clients", "not yet accepting")


class PostgresStore:
    """The `Store` on PostgreSQL (psycopg 3, one connection). One per thread."""

    def __init__(
        self,
        url: str,
        *,
        retention: Retention | None = None,
        connect_timeout: float = 5,
        race_retries: int = 5,
        registry: Registry = REGISTRY,
    ) -> None:
        self.url = url
        #: the metrics this store holds (its columns and SQL follow from it)
        self.registry = registry
        self.retention = retention or Retention()
        self.connect_timeout = connect_timeout
        self.race_retries = race_retries
        self._conn: psycopg.Connection[Any] | None = None
        self._outbox_indexed = False
        self._run(lambda conn: ensure_schema(conn, self.registry, self._where()))

    # -- connection -------------------------------------------------------------------
    def connection(self) -> psycopg.Connection[Any]:
        """The live connection, reconnecting first when the last one broke."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, int(self.connect_timeout)),
                    application_name="convmetrics",
                )
            except psycopg.OperationalError as exc:
                msg = str(exc)
                if "FATAL:" in msg and not any(t in msg for t in _TRANSIENT_FATAL):
                    raise StoreError(f"PostgreSQL store refused the connection: {msg}") from exc
                raise StoreUnavailableError(f"PostgreSQL store unreachable: {msg}") from exc
        return self._conn

    def reconnect(self) -> None:
        """Drop the connection; the next call opens a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` in one transaction; lock races retried, lost connections made transient."""
        for attempt in range(self.race_retries + 1):
            conn = self.connection()
            try:
                with conn.transaction():
                    return work(conn)
            except _RACES as exc:
                if attempt == self.race_retries:
                    raise StoreUnavailableError(f"PostgreSQL store: {exc} (after {attempt} retries)") from exc
                log.info("PostgreSQL store: %s; retrying the transaction", exc)
                time.sleep(0.05 * (attempt + 1))
            except psycopg.Error as exc:
                if conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError):
                    self.reconnect()
                    raise StoreUnavailableError(f"PostgreSQL store connection lost: {exc}") from exc
                raise StoreError(f"PostgreSQL store failed: {exc}") from exc
        raise AssertionError("unreachable")

    # -- ownership --------------------------------------------------------------------
    def check_topic(self, topic: str) -> None:
        """A database holds one topic's metrics; refuse to mix another in."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO meta VALUES ('topic', %s) ON CONFLICT DO NOTHING", (topic,))
            row = conn.execute("SELECT value FROM meta WHERE name='topic'").fetchone()
            if row is not None and row[0] != topic:
                raise StoreError(
                    f"store {self._where()} holds metrics of topic {row[0]!r}, not {topic!r}: "
                    "use one store per topic (a database each)"
                )

        self._run(work)

    def claim(self, topic: str, partition: int, owner: str) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "INSERT INTO owners VALUES (%s, 1, %s) ON CONFLICT (partition) DO UPDATE "
                "SET epoch = owners.epoch + 1, owner = excluded.owner RETURNING epoch",
                (partition, owner),
            ).fetchone()
            assert row is not None
            return int(row[0])

        return self._retrying(lambda: self._run(work), f"claim partition {partition}")

    def load_partition(self, topic: str, partition: int) -> PartitionState:
        def work(conn: psycopg.Connection[Any]) -> PartitionState:
            off = conn.execute(
                "SELECT next_offset, watermark FROM offsets WHERE partition=%s", (partition,)
            ).fetchone()
            convs = {
                (a, c): blob
                for a, c, blob in conn.execute(
                    "SELECT account, conversation, state FROM conversations WHERE partition=%s", (partition,)
                )
            }
            return PartitionState(None if off is None else off[0], 0 if off is None else off[1], convs)

        return self._retrying(lambda: self._run(work), f"load partition {partition}")

    def _retrying(self, call: Callable[[], T], what: str, patience: float = 120) -> T:
        """Ownership calls run inside Kafka's rebalance callback: ride out a short outage."""
        deadline, delay = time.monotonic() + patience, 0.2
        while True:
            try:
                return call()
            except StoreUnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- commit -----------------------------------------------------------------------
    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        if not partitions:
            return
        batch = Batch(partitions, self.registry)
        self._run(lambda conn: self._commit(conn, partitions, batch))

    def _commit(self, conn: psycopg.Connection[Any], partitions: list[PartitionCommit], batch: Batch) -> None:
        # the schema's DDL (CREATE INDEX IF NOT EXISTS locks its table even when the index
        # exists) takes this lock exclusively: a consumer starting up waits for commits in
        # flight instead of deadlocking with them over table locks taken in another order
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SCHEMA_LOCK,))
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
        if batch.closures:
            conn.execute(UPSERT_CLOSURES, columns(batch.closures, CLOSURE_WIDTH))
        if batch.first_assignments:
            conn.execute(UPSERT_FIRST_ASSIGNMENTS, columns(batch.first_assignments, FIRST_ASSIGNMENT_WIDTH))
        aggregate(conn, partitions, self.registry)
        self._gauges(conn, partitions)
        with conn.cursor() as cur:
            for sql, params in batch.rechecks(self.registry):
                cur.execute(sql, params)
        if batch.conversations:
            conn.execute(UPSERT_CONVERSATIONS, columns(batch.conversations, 4))
        if batch.expired:
            conn.execute(
                "DELETE FROM conversations WHERE (account, conversation) IN "
                "(SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
                columns(batch.expired, 2),
            )
        conn.execute(
            "INSERT INTO offsets SELECT * FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) "
            "ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset, "
            "watermark = excluded.watermark",
            columns(batch.offsets, 3),
        )

    def _gauges(self, conn: psycopg.Connection[Any], partitions: list[PartitionCommit]) -> None:
        """Each partition's gauge changes into its own backlog rows (only its owner writes them)."""
        rows = [
            (by, key, p.partition, *values, p.next_offset)  # seq: as the partition's metric rows'
            for p in sorted(partitions, key=lambda p: p.partition)
            for (by, key), values in sorted(gauge_rows([p.delta.gauges], self.registry).items())
        ]
        if rows:
            sql = sqlgen.backlog_upsert(sqlgen.POSTGRES, self.registry)
            conn.execute(sql, columns(rows, 4 + len(self.registry.gauges)))

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
            contains=contains,
            keys=keys,
            parts=parts,
            size=self.registry.windows.get(window),
        )
        sql = sqlgen.query(sqlgen.POSTGRES, where, "%s", self.registry, metrics)

        def work(conn: psycopg.Connection[Any]) -> list[MetricRow]:
            found = conn.execute(sql, [*args, limit]).fetchall()
            if not found:
                return []
            bin_sql, bin_args = bins_filter(by, window, key, found[0][1], found[-1][1], "%s")
            return build_rows(by, window, found, conn.execute(bin_sql, bin_args), self.registry, metrics)

        return self._run(work)

    def backlog(
        self, by: str, *, key: str | None = None, parts: Mapping[int, str] | None = None
    ) -> tuple[int | None, list[BacklogRow]]:
        where, args = backlog_filter(by, key, parts, "%s")
        sql = sqlgen.backlog_query(sqlgen.POSTGRES, where, self.registry)

        def work(conn: psycopg.Connection[Any]) -> tuple[int | None, list[BacklogRow]]:
            newest = conn.execute("SELECT max(watermark) FROM offsets").fetchone()
            found = conn.execute(sql, args).fetchall() if self.registry.gauges else []
            return (None if newest is None else newest[0]), [tuple(r) for r in found]

        return self._run(work)

    def closure_list(self, listing: ClosureListing) -> list[ListedClosure]:
        def work(conn: psycopg.Connection[Any]) -> list[ListedClosure]:
            return list_closures(
                listing, sqlgen.POSTGRES, lambda sql, args: conn.execute(sql, args).fetchall()
            )

        return self._run(work)

    def newest_start(self, by: str, window: str) -> int | None:
        def work(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(NEWEST_START.format(mark="%s"), (by, window)).fetchone()
            return None if row is None else row[0]

        return self._run(work)

    def rank(self, ranking: Ranking) -> tuple[list[MetricRow], int]:
        def work(conn: psycopg.Connection[Any]) -> tuple[list[MetricRow], int]:
            def page_bins(by: str, window: str, keys: list[str], lo: int, hi: int) -> list[Any]:
                return conn.execute(*bins_filter(by, window, None, lo, hi, "%s", keys=keys)).fetchall()

            def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                return conn.execute(sql, args).fetchall()

            return rank_rows(ranking, self.registry, fetch, page_bins, sqlgen.POSTGRES)

        return self._run(work)

    def purge(self) -> int:
        """Delete window rows older than their retention; returns rows deleted."""

        def work(conn: psycopg.Connection[Any]) -> int:
            newest = conn.execute("SELECT max(watermark) FROM offsets").fetchone()
            if newest is None or newest[0] is None:
                return 0
            deleted = 0
            for win in WINDOWS:
                keep = self.retention.for_window(win)
                if keep is None or win == ALL:
                    continue
                horizon = newest[0] - keep
                conn.execute("DELETE FROM metric_bins WHERE win=%s AND start<%s", (win, horizon))
                deleted += conn.execute(
                    "DELETE FROM metric_rows WHERE win=%s AND start<%s", (win, horizon)
                ).rowcount
            return deleted

        return self._run(work)

    # -- the outbox of the metrics topic -----------------------------------------------
    def changed_since(
        self, marks: dict[int, int], commits: int = 20
    ) -> tuple[list[MetricRow], dict[int, int]]:
        """Rows the partitions of `marks` changed after their marks (whole commits, up to
        `commits` of each), merged over partitions, and the marks that covers."""
        gauges = bool(self.registry.gauges)
        if not self._outbox_indexed:
            # see OUTBOX_INDEX; DDL under the schema lock, like the schema itself, and only
            # where the index is missing (the lock holds back every other commit)

            indexes = {OUTBOX_INDEX_NAME: OUTBOX_INDEX}
            if gauges:
                indexes[sqlgen.BACKLOG_OUTBOX_INDEX_NAME] = sqlgen.BACKLOG_OUTBOX_INDEX

            def index(conn: psycopg.Connection[Any]) -> None:
                for name, ddl in indexes.items():
                    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
                    if exists is not None and exists[0]:
                        continue
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(ddl)

            self._run(index)
            self._outbox_indexed = True

        Keys = set[tuple[str, str, int, str]]

        def work(conn: psycopg.Connection[Any]) -> tuple[Keys, list[MetricRow], dict[int, int]]:
            def fetch(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                return conn.execute(sql, args).fetchall()

            found, live, newest = outbox_keys(marks, commits, fetch, "%s", gauges=gauges)
            return found, live_rows(live, fetch, sqlgen.POSTGRES, self.registry), newest

        found, live, newest = self._run(work)
        rows = [
            r
            for by, win, start, key in sorted(found)
            for r in self.query(by, win, key=key, start_from=start, start_to=start + 1)
        ]
        return rows + live, newest

    def published_marks(self, partitions: list[int], topic: str = "") -> dict[int, int]:
        def work(conn: psycopg.Connection[Any]) -> dict[int, int]:
            sql = "SELECT partition, seq FROM published_marks WHERE topic = %s"
            found = dict(conn.execute(sql, (topic,)).fetchall())
            return {p: int(found.get(p, 0)) for p in partitions}

        return self._run(work)

    def mark_published(self, marks: dict[int, int], topic: str = "") -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO published_marks VALUES (%s, %s, %s) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET seq = greatest(published_marks.seq, excluded.seq)",
                    [(topic, p, seq) for p, seq in sorted(marks.items())],
                )

        self._run(work)

    def close(self) -> None:
        self.reconnect()

    def _where(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
