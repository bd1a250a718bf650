"""The SQLite store's SQL: its tables, the upsert of a commit's rolled-up rows, and the
statements that aggregate its partials.

Kept apart from `consumer.store.sqlite` (the Python around them) so each reads on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from consumer.fold.delta import CLOSURE_KEY_FIELDS, CLOSURE_WIDTH, FIRST_ASSIGNMENT_WIDTH, layout_of
from consumer.fold.registry import Registry
from consumer.store import sqlgen

#: the tables beside the metric rows (`Statements.rows` makes those, by the registry)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- metric_rows_by_seq (OUTBOX_INDEX) is made by the first publication, not here: kept up to
-- date it costs a delete and an insert per changed row, which a store nobody publishes skips
-- keyed by account and time: an account row's min/max recheck reads one range of it (ttc
-- included), and each closure costs two B-tree inserts, not three (an event's account and
-- closedAt never change, so the key names one closure as the event hash did)
CREATE TABLE IF NOT EXISTS closures (
    event_hash INTEGER NOT NULL, partition INTEGER NOT NULL, account INTEGER NOT NULL,
    conversation INTEGER NOT NULL, channel_type TEXT NOT NULL, closed_at INTEGER NOT NULL,
    ttc INTEGER, inbox INTEGER, app INTEGER, event_id TEXT,
    PRIMARY KEY (account, closed_at, event_hash)) WITHOUT ROWID;
DROP INDEX IF EXISTS closures_by_channel;
DROP INDEX IF EXISTS closures_by_account;
-- covering (ttc included): recomputing a row's min/max after a retraction reads no table rows
CREATE INDEX IF NOT EXISTS closures_by_channel_ttc ON closures (channel_type, closed_at, ttc);
-- a conversation's closures: /v1/closures/conversations' first_close reads its earliest
-- (consumer.store.closure_list; one more B-tree insert per closure, docs/api.md)
CREATE INDEX IF NOT EXISTS closures_by_conversation ON closures (account, conversation, closed_at);
-- (the app index is made after MIGRATE_CLOSURES: an older store's table lacks the column)
-- the assignment each conversation's time to first assignment counts (one row per
-- conversation, replaced when a late event changes it): a row's min/max recheck reads it
CREATE TABLE IF NOT EXISTS first_assignments (
    account INTEGER NOT NULL, conversation INTEGER NOT NULL, partition INTEGER NOT NULL,
    channel_type TEXT NOT NULL, inbox INTEGER, app INTEGER, assigned_at INTEGER NOT NULL,
    ttfa INTEGER NOT NULL, PRIMARY KEY (account, conversation)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS first_assignments_by_channel
    ON first_assignments (channel_type, assigned_at, ttfa);
-- the app and account,channel_type rows' rechecks: without them SQLite scanned the whole
-- table (app) or every account of the channel type (bench/pipeline.py: 20 s of a 1M-event run)
CREATE INDEX IF NOT EXISTS first_assignments_by_app ON first_assignments (app, assigned_at, ttfa);
CREATE INDEX IF NOT EXISTS first_assignments_by_account_channel
    ON first_assignments (account, channel_type, assigned_at, ttfa);
CREATE TABLE IF NOT EXISTS conversations (
    partition INTEGER NOT NULL, account INTEGER NOT NULL, conversation INTEGER NOT NULL,
    state TEXT NOT NULL, PRIMARY KEY (account, conversation)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_by_partition ON conversations (partition);
-- conversations live as a log of each commit's changes plus a snapshot per partition
-- (sequential inserts, a row per `Changes` chunk, instead of a random B-tree upsert per
-- conversation);
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
-- the keys of rows purged past retention, while a metrics topic publishes: each topic
-- tombstones them (consumer.store.outbox.PURGED)
CREATE TABLE IF NOT EXISTS purged_rows (
    id INTEGER PRIMARY KEY, by TEXT NOT NULL, win TEXT NOT NULL, start INTEGER NOT NULL, key TEXT NOT NULL);
-- how far each metrics topic got, per partition (the seq of the rows published last)
CREATE TABLE IF NOT EXISTS published_marks (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (topic, partition));
"""

#: stores made before the closures table was keyed by account: keyed by event hash, they
#: need this index for the account rows' recheck
OLD_CLOSURES_INDEX = (
    "CREATE INDEX IF NOT EXISTS closures_by_account_ttc ON closures (account, closed_at, ttc)"
)


def _rows(columns: int, packed: bool, param: str = "?") -> str:
    """SELECT of a staged payload's rows: a blob of `pack_rows` read by the compiled
    `packed_rows` table (no parsing per field), or a JSON array of arrays (the reference)."""
    if packed:
        return "SELECT " + ", ".join(f"c{i}" for i in range(columns)) + f" FROM packed_rows({param})"
    return "SELECT " + ", ".join(f"value->>{i}" for i in range(columns)) + f" FROM json_each({param})"


@dataclass(frozen=True)
class Statements:
    """The SQL that depends on the metric registry."""

    rows: str  # the metric_rows table
    #: a commit's rows rolled up from its facts (consumer.store.rollup) into
    #: metric_rows: packed (?1 the payload, ?2 the partition, ?3 the seq) or one row each
    #: (executemany, every column bound), by payload kind
    upsert_rolled: dict[bool, str]
    fact_width: int


@cache
def statements(registry: Registry) -> Statements:
    values = len(registry.value_columns)
    cols = ", ".join((*sqlgen.ROW_KEY, *registry.value_columns, "seq", "bins"))
    # a rolled-up row is (by, win, start, key, *values, bins): the commit's partition and seq go between
    packed = ["c0", "c1", "c2", "c3", "?2", *(f"c{4 + i}" for i in range(values)), "?3", f"c{4 + values}"]
    upsert = f"INSERT INTO metric_rows AS r ({cols}) "
    conflict = sqlgen.on_conflict(sqlgen.SQLITE, registry)
    return Statements(
        rows=sqlgen.row_table(sqlgen.SQLITE, registry) + " WITHOUT ROWID",
        upsert_rolled={
            True: f"{upsert}SELECT {', '.join(packed)} FROM packed_rows(?1) WHERE true{conflict}",
            False: f"{upsert}VALUES ({', '.join('?' * (len(packed)))}){conflict}",
        },
        fact_width=len(layout_of(registry).fields),
    )


def _key_order(columns: tuple[int, ...], packed: bool) -> str:
    """ORDER BY a staged payload's columns: SQLite sorts a commit's rows into their table's
    key order, so that each insert lands beside the last one instead of at a random page of
    a B-tree bigger than the page cache, and sorts them without the GIL (sorted in Python on
    the store writer's thread, they held the polling thread up: docs/performance.md)."""
    return "ORDER BY " + ", ".join((f"c{i}" if packed else f"value->>{i}") for i in columns)


#: a commit's closures (consumer.fold.ClosureRow), by payload kind, in the table's key
#: order (account, closed_at, event_hash: consumer.fold.delta.CLOSURE_KEY_FIELDS)
STAGE_CLOSURES = {
    packed: f"INSERT INTO closures {_rows(CLOSURE_WIDTH, packed)} WHERE true "
    f"{_key_order(CLOSURE_KEY_FIELDS, packed)} "
    "ON CONFLICT DO UPDATE SET ttc = excluded.ttc, event_id = coalesce(excluded.event_id, event_id)"
    for packed in (False, True)
}
#: a commit's first assignments (consumer.fold.delta.FirstAssignmentRow), by payload kind,
#: in the table's key order (account, conversation)
STAGE_FIRST_ASSIGNMENTS = {
    packed: f"INSERT INTO first_assignments {_rows(FIRST_ASSIGNMENT_WIDTH, packed)} WHERE true "
    f"{_key_order((0, 1), packed)} "
    "ON CONFLICT DO UPDATE SET channel_type = excluded.channel_type, inbox = excluded.inbox, "
    "app = excluded.app, assigned_at = excluded.assigned_at, ttfa = excluded.ttfa"
    for packed in (False, True)
}
#: a store made before closures kept their inbox and app (NULL for the closures before)
MIGRATE_CLOSURES = (
    "ALTER TABLE closures ADD COLUMN inbox INTEGER",
    "ALTER TABLE closures ADD COLUMN app INTEGER",
)
#: a store made before closures kept their event id (NULL for the closures before)
MIGRATE_CLOSURE_IDS = "ALTER TABLE closures ADD COLUMN event_id TEXT"
#: an app row's min/max recheck reads one range of this (the other groupings' have theirs)
APP_INDEX = "CREATE INDEX IF NOT EXISTS closures_by_app_ttc ON closures (app, closed_at, ttc)"
#: a store made before bins lived in their rows: its metric_bins table folded into the rows
#: (run in one transaction, functions registered; consumer.store.sqlite does it at open)
MIGRATE_BINS = (
    "ALTER TABLE metric_rows ADD COLUMN bins BLOB",
    """UPDATE metric_rows SET bins = (SELECT bins_pack(b.bin, b.n) FROM metric_bins AS b
        WHERE b.by = metric_rows.by AND b.win = metric_rows.win AND b.start = metric_rows.start
        AND b.key = metric_rows.key)""",
    "DROP TABLE metric_bins",
)


#: a row's min/max of a distribution recomputed from its source table after a retraction
#: (`consumer.store.sqlgen.RECHECKED`: the closures, the first assignments), for all the
#: rows of one grouping that lost values in one statement (one GIL hand-over, not one per
#: row): ? is a JSON array of [by, win, start, key, partition, lo, hi, least lost,
#: greatest lost, *the key's dimension values]. Every key column comes from the array, so
#: that SQLite looks each row up by its primary key (with `m.by` bound as a parameter it
#: scanned the grouping's rows once per array row)
RECHECK = """
UPDATE metric_rows AS m SET ({c}_min, {c}_max) = (
    SELECT min({c}), max({c}) FROM {table} WHERE {where} AND {t} >= r.lo AND {t} < r.hi)
FROM (SELECT value->>0 AS by, value->>1 AS win, value->>2 AS start, value->>3 AS key,
             value->>4 AS part, value->>5 AS lo, value->>6 AS hi, value->>7 AS least,
             value->>8 AS greatest{dims}
      FROM json_each(?)) AS r
WHERE m.by = r.by AND m.win = r.win AND m.start = r.start AND m.key = r.key AND m.partition = r.part
  AND (m.{c}_min >= r.least OR m.{c}_max <= r.greatest)
"""
ALL_TIME_END = 2**62
