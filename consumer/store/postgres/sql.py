"""The PostgreSQL store's own SQL: the tables beside the metric rows (those follow from
the registry: `consumer.store.sqlgen`), the migration of older databases, the recheck."""

from __future__ import annotations

#: the tables beside the metric rows (`sqlgen.row_table` makes those, by the registry)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- keyed by account and time (as on SQLite): an account row's min/max recheck reads one
-- range of the key, and each closure costs one B-tree insert less than with a key of its
-- event hash plus an account index (an event's account and closedAt never change, so the
-- key names one closure as the event hash did)
CREATE TABLE IF NOT EXISTS closures (
    event_hash BIGINT NOT NULL, partition INTEGER NOT NULL, account BIGINT NOT NULL,
    conversation BIGINT NOT NULL, channel_type TEXT NOT NULL, closed_at BIGINT NOT NULL,
    ttc BIGINT, inbox BIGINT, app BIGINT, event_id TEXT COLLATE "C",
    PRIMARY KEY (account, closed_at, event_hash));
-- a database made before closures kept their inbox and app (NULL for the closures before)
ALTER TABLE closures ADD COLUMN IF NOT EXISTS inbox BIGINT, ADD COLUMN IF NOT EXISTS app BIGINT;
-- ... or their event id (NULL before; "C": ordered by bytes, as the folds compare ids)
ALTER TABLE closures ADD COLUMN IF NOT EXISTS event_id TEXT COLLATE "C";
CREATE INDEX IF NOT EXISTS closures_by_channel ON closures (channel_type, closed_at);
-- a conversation's closures: /v1/closures/conversations' first_close reads its earliest
CREATE INDEX IF NOT EXISTS closures_by_conversation ON closures (account, conversation, closed_at);
-- the assignment each conversation's time to first assignment counts (one row per
-- conversation, replaced when a late event changes it): a row's min/max recheck reads it
CREATE TABLE IF NOT EXISTS first_assignments (
    account BIGINT NOT NULL, conversation BIGINT NOT NULL, partition INTEGER NOT NULL,
    channel_type TEXT NOT NULL, inbox BIGINT, app BIGINT, assigned_at BIGINT NOT NULL,
    ttfa BIGINT NOT NULL, PRIMARY KEY (account, conversation));
CREATE INDEX IF NOT EXISTS first_assignments_by_channel ON first_assignments (channel_type, assigned_at);
CREATE INDEX IF NOT EXISTS first_assignments_by_app ON first_assignments (app, assigned_at);
CREATE INDEX IF NOT EXISTS first_assignments_by_account_channel
    ON first_assignments (account, channel_type, assigned_at);
CREATE TABLE IF NOT EXISTS conversations (
    partition INTEGER NOT NULL, account BIGINT NOT NULL, conversation BIGINT NOT NULL,
    state TEXT NOT NULL, PRIMARY KEY (account, conversation));
CREATE INDEX IF NOT EXISTS conversations_by_partition ON conversations (partition);
-- conversations live as a log of each commit's changes plus a snapshot per partition
-- (consumer.store.conversation_log): appended rows instead of an upsert, and a dead row
-- version, per changed conversation; the table above holds what databases written before
-- the log still have (read under it). The id orders a partition's log: one owner appends
-- to it at a time, and a sequence never makes a transaction wait.
CREATE TABLE IF NOT EXISTS conversation_snapshot_chunks (
    partition INTEGER NOT NULL, chunk INTEGER NOT NULL, state BYTEA NOT NULL, PRIMARY KEY (partition, chunk));
CREATE TABLE IF NOT EXISTS conversation_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, partition INTEGER NOT NULL,
    changed BYTEA NOT NULL, expired BYTEA NOT NULL);
ALTER TABLE conversation_snapshot_chunks ALTER COLUMN state SET STORAGE EXTERNAL;
ALTER TABLE conversation_log ALTER COLUMN changed SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS conversation_log_by_partition ON conversation_log (partition, id);
CREATE TABLE IF NOT EXISTS owners (
    partition INTEGER PRIMARY KEY, epoch BIGINT NOT NULL, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    partition INTEGER PRIMARY KEY, next_offset BIGINT NOT NULL, watermark BIGINT NOT NULL);
-- the keys of rows purged past retention, while a metrics topic publishes: each topic
-- tombstones them (consumer.store.outbox.PURGED)
CREATE TABLE IF NOT EXISTS purged_rows (
    id BIGSERIAL PRIMARY KEY, by TEXT NOT NULL, win TEXT NOT NULL, start BIGINT NOT NULL, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS published_marks (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (topic, partition));
"""
#: a database written before rows were keyed by partition: its rows become partition -1's
#: (merged with the new ones at query time)
MIGRATE_PARTITION = """
ALTER TABLE metric_rows ADD COLUMN partition INTEGER NOT NULL DEFAULT -1;
ALTER TABLE metric_rows DROP CONSTRAINT metric_rows_pkey, ADD PRIMARY KEY (by, win, start, key, partition);
ALTER TABLE metric_bins ADD COLUMN partition INTEGER NOT NULL DEFAULT -1;
ALTER TABLE metric_bins DROP CONSTRAINT metric_bins_pkey,
    ADD PRIMARY KEY (by, win, start, key, partition, bin);
UPDATE metric_rows SET seq = 0;
DROP INDEX IF EXISTS metric_rows_by_seq;
"""
#: a database made before the bins lived in their rows (a metric_bins table, one row per
#: row and bin): each row's bins merged into its arrays (they are empty at the first
#: migration; not where a process of an older release made the table again and wrote to
#: it), and the table goes (after MIGRATE_PARTITION: the table has its partition column)
MIGRATE_BINS = """
ALTER TABLE metric_rows ADD COLUMN IF NOT EXISTS bin_ids BIGINT[], ADD COLUMN IF NOT EXISTS bin_ns BIGINT[];
UPDATE metric_rows AS r SET (bin_ids, bin_ns) = (
    SELECT array_agg(b ORDER BY b), array_agg(n ORDER BY b) FROM (
        SELECT b, CAST(sum(n) AS BIGINT) AS n FROM unnest(r.bin_ids || m.ids, r.bin_ns || m.ns) AS u(b, n)
        GROUP BY b HAVING sum(n) <> 0) AS merged)
FROM (
    SELECT by, win, start, key, partition, array_agg(bin ORDER BY bin) AS ids, array_agg(n ORDER BY bin) AS ns
    FROM metric_bins WHERE n <> 0 GROUP BY by, win, start, key, partition) AS m
WHERE r.by = m.by AND r.win = m.win AND r.start = m.start AND r.key = m.key AND r.partition = m.partition;
DROP TABLE IF EXISTS metric_bins;
"""
#: a database made before closures were keyed by account and time (keyed by event hash,
#: with an index by account): the same rows under the new key, the index it replaces dropped
MIGRATE_CLOSURES_KEY = """
ALTER TABLE closures DROP CONSTRAINT {constraint}, ADD PRIMARY KEY (account, closed_at, event_hash);
DROP INDEX IF EXISTS closures_by_account;
"""
#: where the registry groups by app: its rows' min/max rechecks read it (each closure pays an
#: index insert for it)
APP_INDEX = "CREATE INDEX IF NOT EXISTS closures_by_app ON closures (app, closed_at)"
#: room left in each page of the metric rows (new pages; a table made before gets it for
#: its pages to come): a commit's update of a row whose page has room is a HOT update, no
#: new primary-key entry, and the 1-day and all-time rows are updated at almost every
#: commit (docs/performance.md)
ROWS_FILLFACTOR = "ALTER TABLE metric_rows SET (fillfactor = 85)"
#: the share of rows each grouping and window holds: the planner multiplies the shares of
#: `by` and of `win` as if unrelated (twice the account table's all-time rows, say), and
#: past some size it then reads the whole table instead of the key's range; statistics of
#: the pair (kept by ANALYZE and autovacuum) give it their real shares (docs/operations.md)
ROWS_STATISTICS = "CREATE STATISTICS IF NOT EXISTS metric_rows_by_window (mcv) ON by, win FROM metric_rows"
#: pg_advisory_xact_lock key: processes starting together create the schema one at a time
SCHEMA_LOCK = 0x636F6E766D6574

#: a commit's closures and first assignments are copied into these, then upserted from
#: them: COPY and `INSERT ... SELECT` took half the time of one `INSERT ... SELECT FROM
#: unnest(...)` of the rows as arrays (docs/performance.md); made `LIKE` the tables they fill
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS cm_closures (LIKE closures) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS cm_first_assignments (LIKE first_assignments) ON COMMIT DELETE ROWS
"""
CLOSURE_COLUMNS = (
    "event_hash, partition, account, conversation, channel_type, closed_at, ttc, inbox, app, event_id"
)
STAGE_CLOSURES = f"COPY cm_closures ({CLOSURE_COLUMNS}) FROM STDIN"
UPSERT_CLOSURES = f"""
INSERT INTO closures ({CLOSURE_COLUMNS}) SELECT {CLOSURE_COLUMNS} FROM cm_closures
ON CONFLICT (account, closed_at, event_hash) DO UPDATE SET ttc = excluded.ttc,
    event_id = coalesce(excluded.event_id, closures.event_id)
"""
FIRST_ASSIGNMENT_COLUMNS = "account, conversation, partition, channel_type, inbox, app, assigned_at, ttfa"
STAGE_FIRST_ASSIGNMENTS = f"COPY cm_first_assignments ({FIRST_ASSIGNMENT_COLUMNS}) FROM STDIN"
UPSERT_FIRST_ASSIGNMENTS = f"""
INSERT INTO first_assignments ({FIRST_ASSIGNMENT_COLUMNS})
SELECT {FIRST_ASSIGNMENT_COLUMNS} FROM cm_first_assignments
ON CONFLICT (account, conversation) DO UPDATE SET partition = excluded.partition,
    channel_type = excluded.channel_type, inbox = excluded.inbox, app = excluded.app,
    assigned_at = excluded.assigned_at, ttfa = excluded.ttfa
"""
#: a commit's log rows of one partition, in order (consumer.store.conversation_log; the id
#: follows the order COPY reads them in), and a snapshot's chunks
APPEND_CONVERSATION_LOG = "COPY conversation_log (partition, changed, expired) FROM STDIN (FORMAT BINARY)"
APPEND_SNAPSHOT_CHUNKS = (
    "COPY conversation_snapshot_chunks (partition, chunk, state) FROM STDIN (FORMAT BINARY)"
)
#: the min/max of a distribution recomputed from its source table after a retraction
#: (`consumer.store.sqlgen.RECHECKED`: the closures, the first assignments), for all the rows
#: of one grouping that lost values in one statement: the arrays are each row's window,
#: start, key, partition, time range, least and greatest lost value, and its key's dimension
#: values; a row whose min (max) is below (above) every lost value keeps it
RECHECK = """
UPDATE metric_rows AS m SET ({c}_min, {c}_max) = (
    SELECT min(s.{c}), max(s.{c}) FROM {table} AS s
    WHERE {where} AND s.{t} >= r.lo AND s.{t} < r.hi AND s.partition = r.part)
FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::int[], %s::bigint[], %s::bigint[], %s::bigint[],
            %s::bigint[]{types}) AS r(win, start, key, part, lo, hi, least, greatest{dims})
WHERE m.by = %s AND m.win = r.win AND m.start = r.start AND m.key = r.key AND m.partition = r.part
  AND (m.{c}_min >= r.least OR m.{c}_max <= r.greatest)
"""
ALL_TIME_END = 2**62
