"""The SQLite store's SQL: its tables, and the statements that aggregate a commit's facts.

Kept apart from `consumer.store.sqlite` (the Python around them) so each reads on its own.
"""

from __future__ import annotations

from consumer.fold import BY_ACCOUNT, BY_CHANNEL
from consumer.fold.windows import WINDOWS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metric_rows (
    by TEXT NOT NULL, win TEXT NOT NULL, start INTEGER NOT NULL, key TEXT NOT NULL,
    closures INTEGER NOT NULL, reopens INTEGER NOT NULL, closed_unread INTEGER NOT NULL,
    ttc_count INTEGER NOT NULL, ttc_sum INTEGER NOT NULL, ttc_min INTEGER, ttc_max INTEGER,
    lag_count INTEGER NOT NULL, lag_sum INTEGER NOT NULL, lag_max INTEGER,
    seq INTEGER NOT NULL,  -- the commit that last changed the row (outbox of the metrics topic)
    bins BLOB,  -- the row's sketch bins, time to close and ingest lag (consumer.store.sqlite.bins)
    PRIMARY KEY (by, win, start, key)) WITHOUT ROWID;
-- metric_rows_by_seq (OUTBOX_INDEX) is made by the first publication, not here: kept up to
-- date it costs a delete and an insert per changed row, which a store nobody publishes skips
-- keyed by account and time: an account row's min/max recheck reads one range of it (ttc
-- included), and each closure costs two B-tree inserts, not three (an event's account and
-- closedAt never change, so the key names one closure as the event hash did)
CREATE TABLE IF NOT EXISTS closures (
    event_hash INTEGER NOT NULL, partition INTEGER NOT NULL, account INTEGER NOT NULL,
    conversation INTEGER NOT NULL, channel_type TEXT NOT NULL, closed_at INTEGER NOT NULL,
    ttc INTEGER, PRIMARY KEY (account, closed_at, event_hash)) WITHOUT ROWID;
DROP INDEX IF EXISTS closures_by_channel;
DROP INDEX IF EXISTS closures_by_account;
-- covering (ttc included): recomputing a row's min/max after a retraction reads no table rows
CREATE INDEX IF NOT EXISTS closures_by_channel_ttc ON closures (channel_type, closed_at, ttc);
CREATE TABLE IF NOT EXISTS conversations (
    partition INTEGER NOT NULL, account INTEGER NOT NULL, conversation INTEGER NOT NULL,
    state TEXT NOT NULL, PRIMARY KEY (account, conversation)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_by_partition ON conversations (partition);
-- conversations live as a log of each commit's changes plus a snapshot per partition (one
-- sequential insert per commit instead of a random B-tree upsert per conversation);
-- the table above holds what stores written before the log still have (read under it)
CREATE TABLE IF NOT EXISTS conversation_snapshot_chunks (
    partition INTEGER NOT NULL, chunk INTEGER NOT NULL, state BLOB NOT NULL, PRIMARY KEY (partition, chunk));
CREATE TABLE IF NOT EXISTS conversation_log (
    id INTEGER PRIMARY KEY, partition INTEGER NOT NULL, changed TEXT NOT NULL, expired TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conversation_log_by_partition ON conversation_log (partition, id);
CREATE TABLE IF NOT EXISTS owners (
    partition INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL, watermark INTEGER NOT NULL);
"""

#: stores made before the closures table was keyed by account: keyed by event hash, they
#: need this index for the account rows' recheck
OLD_CLOSURES_INDEX = (
    "CREATE INDEX IF NOT EXISTS closures_by_account_ttc ON closures (account, closed_at, ttc)"
)

ON_ROW_CONFLICT = """
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
    ttc_max = max(coalesce(ttc_max, excluded.ttc_max), coalesce(excluded.ttc_max, ttc_max)),
    bins = bins_merge(bins, excluded.bins)
"""
#: one commit's facts (consumer.fold.Fact), aggregated into the metric tables in SQL, and
#: the channel types' per-minute (lag: per-hour) partial aggregates that their bigger
#: windows roll up from (a few thousand rows instead of every fact)
TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS facts (
    ch TEXT NOT NULL, acc INTEGER NOT NULL, t INTEGER NOT NULL, c INTEGER NOT NULL,
    o INTEGER NOT NULL, u INTEGER NOT NULL, tn INTEGER NOT NULL, ttc INTEGER, bin INTEGER);
CREATE TEMP TABLE IF NOT EXISTS ch_rows (
    ch TEXT, m INTEGER, c INTEGER, o INTEGER, u INTEGER, tn INTEGER, ts INTEGER, mn INTEGER,
    mx INTEGER, lc INTEGER, ls INTEGER, lm INTEGER, counting INTEGER, b BLOB);
"""
CLEAR = (
    "DELETE FROM temp.facts",
    "DELETE FROM temp.ch_rows",
)


def _rows(columns: int, packed: bool) -> str:
    """SELECT of a staged payload's rows: a blob of `pack_rows` read by the compiled
    `packed_rows` table (no parsing per field), or a JSON array of arrays (the reference)."""
    if packed:
        return "SELECT " + ", ".join(f"c{i}" for i in range(columns)) + " FROM packed_rows(?)"
    return "SELECT " + ", ".join(f"value->>{i}" for i in range(columns)) + " FROM json_each(?)"


#: a commit's facts into temp.facts, by payload kind (packed: True)
STAGE = {packed: f"INSERT INTO temp.facts {_rows(9, packed)}" for packed in (False, True)}
#: the ingest-lag partials (consumer.fold.Lags): [channel type, hour, count, sum, max, {bin: n}]
STAGE_LAGS = """
INSERT INTO temp.ch_rows SELECT l.value->>0, l.value->>1, 0, 0, 0, 0, NULL, NULL, NULL,
    l.value->>2, l.value->>3, l.value->>4, 0,
    (SELECT bins_pack(b.key, b.value) FROM json_each(l.value->5) AS b)
FROM json_each(?) AS l
"""
#: a commit's closures (consumer.fold.ClosureRow), by payload kind
STAGE_CLOSURES = {
    packed: f"INSERT INTO closures {_rows(7, packed)} WHERE true ON CONFLICT DO UPDATE SET ttc = excluded.ttc"
    for packed in (False, True)
}
_TTC = (
    "sum(c), sum(o), sum(u), sum(tn), coalesce(sum(tn * ttc), 0), "
    "min(CASE WHEN tn > 0 THEN ttc END), max(CASE WHEN tn > 0 THEN ttc END)"
)

#: the same of one fact, for a row made of one fact (ON_ROW_CONFLICT adds up the rest)
_TTC_ONE = "c, o, u, tn, coalesce(tn * ttc, 0), CASE WHEN tn > 0 THEN ttc END, CASE WHEN tn > 0 THEN ttc END"
#: the account windows whose rows take the facts one upsert each, the upsert adding up facts
#: of one row (SQLite applies DO UPDATE to rows the same statement inserted): nearly every
#: fact has its own 1-minute and 1-hour account row in a commit (99% and 89% on the benchmark
#: stream), where grouping first costs a sort and seven aggregates per fact for nothing
#: (bench/pipeline.py: these two statements 0.39 -> 0.20 and 0.41 -> 0.22 s per 300,000
#: events); a day's or all time's rows share facts (52%, 40%) and stay grouped
ACCOUNT_PER_FACT = frozenset({"1m", "1h"})


def _floor(col: str, size: int | None) -> str:
    """`col` floored to its window's start (SQLite's % truncates towards 0); 0 for all time."""
    return "0" if size is None else f"{col} - (({col} % {size}) + {size}) % {size}"


def _aggregations() -> list[str]:
    """The statements that add the staged facts to metric_rows (parameter ?1: the commit's
    seq), bins included, by the rules of `consumer.fold.Fact`. Channel types: one pass over
    the facts into per-minute partials, rolled up per window. Accounts: one pass per window
    over the facts, grouped or one upsert per fact (ACCOUNT_PER_FACT)."""
    out = [
        f"INSERT INTO temp.ch_rows SELECT ch, {_floor('t', 60)} AS m, sum(c), sum(o), sum(u), sum(tn), "
        "sum(tn * ttc), min(CASE WHEN tn > 0 THEN ttc END), max(CASE WHEN tn > 0 THEN ttc END), "
        "0, NULL, NULL, 1, bins_pack(bin, tn) FROM temp.facts GROUP BY ch, m",
    ]
    for win, size in WINDOWS.items():
        s = _floor("m", size)
        if win == "1m":  # no lag in 1-minute rows, and no row for lag alone
            out.append(
                f"INSERT INTO metric_rows SELECT '{BY_CHANNEL}', '{win}', m, ch, c, o, u, tn, "
                "coalesce(ts, 0), mn, mx, 0, 0, NULL, ?1, b FROM temp.ch_rows WHERE counting"
                + ON_ROW_CONFLICT
            )
        else:
            out.append(
                f"INSERT INTO metric_rows SELECT '{BY_CHANNEL}', '{win}', {s} AS s, ch, sum(c), sum(o), "
                "sum(u), sum(tn), coalesce(sum(ts), 0), min(mn), max(mx), sum(lc), coalesce(sum(ls), 0), "
                "max(lm), ?1, bins_union(b) FROM temp.ch_rows GROUP BY s, ch" + ON_ROW_CONFLICT
            )
        s = _floor("t", size)
        one = win in ACCOUNT_PER_FACT
        values, bins, group = (_TTC_ONE, "bins_one", "") if one else (_TTC, "bins_pack", " GROUP BY s, acc")
        out.append(
            f"INSERT INTO metric_rows SELECT '{BY_ACCOUNT}', '{win}', {s} AS s, CAST(acc AS TEXT) AS k, "
            f"{values}, 0, 0, NULL, ?1, {bins}(bin, tn) FROM temp.facts WHERE true{group}" + ON_ROW_CONFLICT
        )
    return out


#: a store made before bins lived in their rows: its metric_bins table folded into the rows
#: (run in one transaction, functions registered; consumer.store.sqlite does it at open)
MIGRATE_BINS = (
    "ALTER TABLE metric_rows ADD COLUMN bins BLOB",
    """UPDATE metric_rows SET bins = (SELECT bins_pack(b.bin, b.n) FROM metric_bins AS b
        WHERE b.by = metric_rows.by AND b.win = metric_rows.win AND b.start = metric_rows.start
        AND b.key = metric_rows.key)""",
    "DROP TABLE metric_bins",
)


RECHECK = """
UPDATE metric_rows SET (ttc_min, ttc_max) = (
    SELECT min(ttc), max(ttc) FROM closures WHERE {col} = ? AND closed_at >= ? AND closed_at < ?)
WHERE by = ? AND win = ? AND start = ? AND key = ? AND (ttc_min >= ? OR ttc_max <= ?)
"""
ALL_TIME_END = 2**62
AGGREGATE = _aggregations()
