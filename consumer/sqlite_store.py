"""SQLite store: embedded, one file, WAL; several processes may share it."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from consumer.exceptions import FencedError, StoreError
from consumer.fold import BY_ACCOUNT, BY_CHANNEL, decode_snapshot
from consumer.store import (
    ROW_COLUMNS,
    MetricRow,
    PartitionCommit,
    PartitionState,
    Retention,
    bins_filter,
    build_rows,
    row_filter,
)
from consumer.windows import ALL, WINDOWS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metric_rows (
    by TEXT NOT NULL, win TEXT NOT NULL, start INTEGER NOT NULL, key TEXT NOT NULL,
    closures INTEGER NOT NULL, reopens INTEGER NOT NULL, closed_unread INTEGER NOT NULL,
    ttc_count INTEGER NOT NULL, ttc_sum INTEGER NOT NULL, ttc_min INTEGER, ttc_max INTEGER,
    lag_count INTEGER NOT NULL, lag_sum INTEGER NOT NULL, lag_max INTEGER,
    seq INTEGER NOT NULL,  -- the commit that last changed the row (outbox of the metrics topic)
    PRIMARY KEY (by, win, start, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metric_rows_by_seq ON metric_rows (seq);
CREATE TABLE IF NOT EXISTS metric_bins (
    by TEXT NOT NULL, win TEXT NOT NULL, start INTEGER NOT NULL, key TEXT NOT NULL,
    bin INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (by, win, start, key, bin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS closures (
    event_hash INTEGER PRIMARY KEY, partition INTEGER NOT NULL, account INTEGER NOT NULL,
    conversation INTEGER NOT NULL, channel_type TEXT NOT NULL, closed_at INTEGER NOT NULL,
    ttc INTEGER);
DROP INDEX IF EXISTS closures_by_channel;
DROP INDEX IF EXISTS closures_by_account;
-- covering (ttc included): recomputing a row's min/max after a retraction reads no table rows
CREATE INDEX IF NOT EXISTS closures_by_channel_ttc ON closures (channel_type, closed_at, ttc);
CREATE INDEX IF NOT EXISTS closures_by_account_ttc ON closures (account, closed_at, ttc);
CREATE TABLE IF NOT EXISTS conversations (
    partition INTEGER NOT NULL, account INTEGER NOT NULL, conversation INTEGER NOT NULL,
    state TEXT NOT NULL, PRIMARY KEY (account, conversation)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_by_partition ON conversations (partition);
-- conversations live as a log of each commit's changes plus a snapshot per partition (one
-- sequential insert per commit instead of a random B-tree upsert per conversation);
-- the table above holds what stores written before the log still have (read under it)
CREATE TABLE IF NOT EXISTS conversation_snapshots (partition INTEGER PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversation_log (
    id INTEGER PRIMARY KEY, partition INTEGER NOT NULL, changed TEXT NOT NULL, expired TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conversation_log_by_partition ON conversation_log (partition, id);
CREATE TABLE IF NOT EXISTS owners (
    partition INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL, watermark INTEGER NOT NULL);
"""

_ON_ROW_CONFLICT = """
ON CONFLICT DO UPDATE SET
    seq = excluded.seq,
    lag_count = lag_count + excluded.lag_count,
    lag_sum = lag_sum + excluded.lag_sum,
    lag_max = max(coalesce(lag_max, excluded.lag_max), coalesce(excluded.lag_max, lag_max)),
    closures = closures + excluded.closures,
    reopens = reopens + excluded.reopens,
    closed_unread = closed_unread + excluded.closed_unread,
    ttc_count = ttc_count + excluded.ttc_count,
    ttc_sum = ttc_sum + excluded.ttc_sum,
    ttc_min = min(coalesce(ttc_min, excluded.ttc_min), coalesce(excluded.ttc_min, ttc_min)),
    ttc_max = max(coalesce(ttc_max, excluded.ttc_max), coalesce(excluded.ttc_max, ttc_max))
"""
_ON_BIN_CONFLICT = """
ON CONFLICT DO UPDATE SET n = n + excluded.n
"""
#: one commit's facts (consumer.fold.Fact), aggregated into the metric tables in SQL, and
#: the channel types' per-minute (lag: per-hour) partial aggregates that their bigger
#: windows roll up from (a few thousand rows instead of every fact)
_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS facts (
    ch TEXT NOT NULL, acc INTEGER NOT NULL, t INTEGER NOT NULL, c INTEGER NOT NULL,
    o INTEGER NOT NULL, u INTEGER NOT NULL, tn INTEGER NOT NULL, ttc INTEGER, bin INTEGER);
CREATE TEMP TABLE IF NOT EXISTS ch_rows (
    ch TEXT, m INTEGER, c INTEGER, o INTEGER, u INTEGER, tn INTEGER, ts INTEGER, mn INTEGER,
    mx INTEGER, lc INTEGER, ls INTEGER, lm INTEGER, counting INTEGER);
CREATE TEMP TABLE IF NOT EXISTS ch_bins (ch TEXT, m INTEGER, bin INTEGER, n INTEGER);
CREATE TEMP TABLE IF NOT EXISTS ch_lag_bins (ch TEXT, h INTEGER, bin INTEGER, n INTEGER);
"""
_CLEAR = (
    "DELETE FROM temp.facts",
    "DELETE FROM temp.ch_rows",
    "DELETE FROM temp.ch_bins",
    "DELETE FROM temp.ch_lag_bins",
)
_STAGE = """
INSERT INTO temp.facts SELECT
    value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7,
    value->>8
FROM json_each(?)
"""
#: the ingest-lag partials (consumer.fold.Lags): [channel type, hour, count, sum, max, {bin: n}]
_STAGE_LAGS = (
    """INSERT INTO temp.ch_rows SELECT value->>0, value->>1, 0, 0, 0, 0, NULL, NULL, NULL,
        value->>2, value->>3, value->>4, 0 FROM json_each(?)""",
    """INSERT INTO temp.ch_lag_bins SELECT l.value->>0, l.value->>1, b.key, b.value
        FROM json_each(?) AS l, json_each(l.value->5) AS b""",
)
_STAGE_CLOSURES = """
INSERT INTO closures SELECT
    value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
FROM json_each(?) WHERE true
ON CONFLICT DO UPDATE SET ttc = excluded.ttc
"""
_TTC = (
    "sum(c), sum(o), sum(u), sum(tn), coalesce(sum(tn * ttc), 0), "
    "min(CASE WHEN tn > 0 THEN ttc END), max(CASE WHEN tn > 0 THEN ttc END)"
)


def _floor(col: str, size: int | None) -> str:
    """`col` floored to its window's start (SQLite's % truncates towards 0); 0 for all time."""
    return "0" if size is None else f"{col} - (({col} % {size}) + {size}) % {size}"


def _aggregations() -> list[str]:
    """The statements that add the staged facts to metric_rows (parameter ?1: the commit's
    seq) and metric_bins, by the rules of `consumer.fold.Fact`. Channel types: one pass
    over the facts into per-minute partials, rolled up per window. Accounts: one pass per
    window over the counting facts (an account's minutes rarely share facts)."""
    out = [
        f"INSERT INTO temp.ch_rows SELECT ch, {_floor('t', 60)} AS m, sum(c), sum(o), sum(u), sum(tn), "
        "sum(tn * ttc), min(CASE WHEN tn > 0 THEN ttc END), max(CASE WHEN tn > 0 THEN ttc END), "
        "0, NULL, NULL, 1 FROM temp.facts GROUP BY ch, m",
        f"INSERT INTO temp.ch_bins SELECT ch, {_floor('t', 60)} AS m, bin, sum(tn) FROM temp.facts "
        "WHERE tn <> 0 GROUP BY ch, m, bin",
    ]
    for win, size in WINDOWS.items():
        s = _floor("m", size)
        if win == "1m":  # no lag in 1-minute rows, and no row for lag alone
            out.append(
                f"INSERT INTO metric_rows SELECT '{BY_CHANNEL}', '{win}', m, ch, c, o, u, tn, "
                "coalesce(ts, 0), mn, mx, 0, 0, NULL, ?1 FROM temp.ch_rows WHERE counting" + _ON_ROW_CONFLICT
            )
        else:
            out.append(
                f"INSERT INTO metric_rows SELECT '{BY_CHANNEL}', '{win}', {s} AS s, ch, sum(c), sum(o), "
                "sum(u), sum(tn), coalesce(sum(ts), 0), min(mn), max(mx), sum(lc), coalesce(sum(ls), 0), "
                "max(lm), ?1 FROM temp.ch_rows GROUP BY s, ch" + _ON_ROW_CONFLICT
            )
            hs = _floor("h", size)
            out.append(
                f"INSERT INTO metric_bins SELECT '{BY_CHANNEL}', '{win}', {hs} AS s, ch, bin, sum(n) "
                "FROM temp.ch_lag_bins GROUP BY s, ch, bin" + _ON_BIN_CONFLICT
            )
        out.append(
            f"INSERT INTO metric_bins SELECT '{BY_CHANNEL}', '{win}', {s} AS s, ch, bin, sum(n) "
            "FROM temp.ch_bins GROUP BY s, ch, bin HAVING sum(n) <> 0" + _ON_BIN_CONFLICT
        )
        s = _floor("t", size)
        out.append(
            f"INSERT INTO metric_rows SELECT '{BY_ACCOUNT}', '{win}', {s} AS s, CAST(acc AS TEXT) AS k, "
            f"{_TTC}, 0, 0, NULL, ?1 FROM temp.facts WHERE true GROUP BY s, acc" + _ON_ROW_CONFLICT
        )
        out.append(
            f"INSERT INTO metric_bins SELECT '{BY_ACCOUNT}', '{win}', {s} AS s, CAST(acc AS TEXT) AS k, "
            "bin, sum(tn) FROM temp.facts WHERE tn <> 0 GROUP BY s, acc, bin HAVING sum(tn) <> 0"
            + _ON_BIN_CONFLICT
        )
    return out


_RECHECK = """
UPDATE metric_rows SET (ttc_min, ttc_max) = (
    SELECT min(ttc), max(ttc) FROM closures WHERE {col} = ? AND closed_at >= ? AND closed_at < ?)
WHERE by = ? AND win = ? AND start = ? AND key = ? AND (ttc_min >= ? OR ttc_max <= ?)
"""
_ALL_TIME_END = 2**62
_AGGREGATE = _aggregations()


class SqliteStore:
    """The `Store` on SQLite. Thread-compatible, not thread-safe: one per thread."""

    #: conversations are kept as a log plus snapshots: send `PartitionCommit.snapshot` now and then
    wants_snapshots = True

    def __init__(self, path: str, *, retention: Retention | None = None) -> None:
        self.path = path
        self.retention = retention or Retention()
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA cache_size=-8192")  # 8 MiB of pages (it counts in the RSS budget)
            # checkpoint every ~64 MiB of WAL, not 4: pages rewritten by several commits in
            # between (all-time rows, busy conversations) are copied back once
            self.db.execute("PRAGMA wal_autocheckpoint=16384")
            self.db.execute("PRAGMA busy_timeout=60000")
            self.db.executescript(SCHEMA)
            self.db.execute("PRAGMA temp_store=MEMORY")
            self.db.executescript(_TEMP_TABLES)
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
        snap = db.execute(
            "SELECT state FROM conversation_snapshots WHERE partition=?", (partition,)
        ).fetchone()
        if snap is not None:
            convs = decode_snapshot(snap[0])
        else:
            convs = {
                (a, c): blob
                for a, c, blob in db.execute(
                    "SELECT account, conversation, state FROM conversations WHERE partition=?",
                    (partition,),
                )
            }
        for changed, expired in db.execute(
            "SELECT changed, expired FROM conversation_log WHERE partition=? ORDER BY id", (partition,)
        ):
            convs.update(((a, c), blob) for a, c, blob in orjson.loads(changed))
            for a, c in orjson.loads(expired):
                convs.pop((a, c), None)
        return PartitionState(None if off is None else off[0], 0 if off is None else off[1], convs)

    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        # Big batches go in as one JSON text per statement, not executemany: sqlite3 releases
        # the GIL once per statement, so the polling thread keeps it between rows, and a
        # writer re-taking it per row waits a switch interval (5 ms) each time.
        closures = orjson.dumps([c for p in partitions for c in p.delta.closures.values()])
        staged = [orjson.dumps(p.delta.facts) for p in partitions if p.delta.facts]
        lags = [
            orjson.dumps([(*k, *agg) for k, agg in p.delta.lags.items()], option=orjson.OPT_NON_STR_KEYS)
            for p in partitions
            if p.delta.lags
        ]
        recheck: dict[tuple[str, str, str, int], tuple[int, int]] = {}
        for p in partitions:
            for k, (lo, hi) in p.delta.recheck().items():
                was = recheck.get(k)
                recheck[k] = (lo, hi) if was is None else (min(lo, was[0]), max(hi, was[1]))
        with self._tx():
            db = self.db
            self._check_epochs(partitions)
            db.execute(_STAGE_CLOSURES, (closures,))
            if staged or lags:
                seq = self._next_seq()
                for sql in _CLEAR:
                    db.execute(sql)
                for payload in staged:
                    db.execute(_STAGE, (payload,))
                for payload in lags:
                    for sql in _STAGE_LAGS:
                        db.execute(sql, (payload,))
                for sql in _AGGREGATE:
                    db.execute(sql, (seq,) if "?1" in sql else ())
            for (by, key, win, start), lost in recheck.items():
                self._recheck(by, key, win, start, lost)
            for p in partitions:
                self._commit_partition(p)

    def _next_seq(self) -> int:
        row = self.db.execute(
            "INSERT INTO meta VALUES ('commit_seq', '1') ON CONFLICT DO UPDATE "
            "SET value = CAST(value AS INTEGER) + 1 RETURNING CAST(value AS INTEGER)"
        ).fetchone()
        return int(row[0])

    def changed_since(self, seq: int, commits: int = 20) -> tuple[list[MetricRow], int]:
        """Rows changed by commits after `seq` (oldest first) and the newest seq among them."""
        # whole commits only (a commit's rows share one seq): up to `commits` of them per call
        first = self.db.execute("SELECT min(seq) FROM metric_rows WHERE seq > ?", (seq,)).fetchone()[0]
        if first is None:
            return [], seq
        found = self.db.execute(
            "SELECT by, win, start, key, seq FROM metric_rows WHERE seq >= ? AND seq < ? ORDER BY seq",
            (first, first + commits),
        ).fetchall()
        if not found:
            return [], seq
        rows = [
            r
            for by, win, start, key, _ in found
            for r in self.query(by, win, key=key, start_from=start, start_to=start + 1)
        ]
        return rows, max(f[4] for f in found)

    def published_seq(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE name='published_seq'").fetchone()
        return 0 if row is None else int(row[0])

    def mark_published(self, seq: int) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO meta VALUES ('published_seq', ?) ON CONFLICT DO UPDATE "
                "SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (str(seq),),
            )

    def _check_epochs(self, partitions: list[PartitionCommit]) -> None:
        if not partitions:
            return
        marks = ",".join("?" * len(partitions))
        current = dict(
            self.db.execute(
                f"SELECT partition, epoch FROM owners WHERE partition IN ({marks})",
                [p.partition for p in partitions],
            ).fetchall()
        )
        fenced = [p.partition for p in partitions if current.get(p.partition, 0) > p.epoch]
        if fenced:
            raise FencedError(fenced)

    def _recheck(self, by: str, key: str, win: str, start: int, lost: tuple[int, int]) -> None:
        size = WINDOWS[win]
        lo, hi = (start, start + size) if size else (-_ALL_TIME_END, _ALL_TIME_END)
        col = "account" if by == BY_ACCOUNT else "channel_type"
        k: Any = int(key) if by == BY_ACCOUNT else key
        self.db.execute(_RECHECK.format(col=col), (k, lo, hi, by, win, start, key, *lost))

    def _commit_partition(self, p: PartitionCommit) -> None:
        db = self.db
        if p.snapshot is not None:  # it holds every change so far: the log starts afresh
            db.execute(
                "INSERT OR REPLACE INTO conversation_snapshots VALUES (?,?)", (p.partition, p.snapshot)
            )
            db.execute("DELETE FROM conversation_log WHERE partition=?", (p.partition,))
            db.execute("DELETE FROM conversations WHERE partition=?", (p.partition,))
        elif p.conversations or p.expired:
            db.execute(
                "INSERT INTO conversation_log (partition, changed, expired) VALUES (?,?,?)",
                (
                    p.partition,
                    orjson.dumps([(a, c, blob) for (a, c), blob in p.conversations.items()]),
                    orjson.dumps(p.expired),
                ),
            )
        db.execute(
            "INSERT OR REPLACE INTO offsets VALUES (?,?,?)",
            (p.partition, p.next_offset, p.watermark),
        )

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
    ) -> list[MetricRow]:
        where, args = row_filter(
            by, window, key=key, start_from=start_from, start_to=start_to, after=after, mark="?"
        )
        sql = f"SELECT {ROW_COLUMNS} FROM metric_rows WHERE {where} ORDER BY start, key LIMIT ?"
        found = self.db.execute(sql, [*args, limit]).fetchall()
        if not found:
            return []
        bin_sql, bin_args = bins_filter(by, window, key, found[0][1], found[-1][1], "?")
        return build_rows(by, window, found, self.db.execute(bin_sql, bin_args))

    def purge(self) -> int:
        """Delete window rows older than their retention; returns rows deleted."""
        newest = self.db.execute("SELECT max(watermark) FROM offsets").fetchone()[0]
        if newest is None:
            return 0
        deleted = 0
        with self._tx():
            for win in WINDOWS:
                keep = self.retention.for_window(win)
                if keep is None or win == ALL:
                    continue
                horizon = newest - keep
                for table in ("metric_rows", "metric_bins"):
                    cur = self.db.execute(f"DELETE FROM {table} WHERE win=? AND start<?", (win, horizon))
                    if table == "metric_rows":
                        deleted += cur.rowcount
        return deleted

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
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
