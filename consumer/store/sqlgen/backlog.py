"""The gauges (`Registry.gauges`): live counts, not windowed.

One row per (grouping, key, partition) in the `backlog` table, which commits add to
(a conversation's contribution moves between keys, `consumer.fold.delta.gauge_rows`);
only a partition's owner writes its rows, queries sum them. SQLite keeps one writer slot.
A row keeps the seq of the commit that last changed it (the metrics topic's outbox, like
`metric_rows.seq`), and stays when its gauges reach 0: the topic then publishes the 0.
Queries leave the keys whose gauges are all 0 out. The rows are bounded by the keys ever
seen, not by time.
"""

from __future__ import annotations

from consumer.fold.registry import REGISTRY, Registry
from consumer.store.sqlgen.dialect import SQLITE, Dialect

#: the backlog's outbox index, made with `OUTBOX_INDEX` (`consumer.store.base`)
BACKLOG_OUTBOX_INDEX_NAME = "backlog_by_partition_seq"
BACKLOG_OUTBOX_INDEX = f"CREATE INDEX IF NOT EXISTS {BACKLOG_OUTBOX_INDEX_NAME} ON backlog (partition, seq)"


def backlog_table(d: Dialect, registry: Registry = REGISTRY) -> str | None:
    """The `backlog` table, or None when the registry has no gauges."""
    if not registry.gauges:
        return None
    cols = "".join(f"{g.column} {d.integer} NOT NULL, " for g in registry.gauges)
    return (
        f"CREATE TABLE IF NOT EXISTS backlog (by TEXT NOT NULL, key {d.text} NOT NULL, "
        f"partition INTEGER NOT NULL, {cols}seq {d.integer} NOT NULL DEFAULT 0, "
        "PRIMARY KEY (by, key, partition))"
    )


def backlog_seq(d: Dialect) -> str:
    """A backlog table made before its rows kept their commit's seq gets the column (0:
    published once a commit changes the row again)."""
    exists = "" if d is SQLITE else "IF NOT EXISTS "
    return f"ALTER TABLE backlog ADD COLUMN {exists}seq {d.integer} NOT NULL DEFAULT 0"


def backlog_upsert(d: Dialect, registry: Registry = REGISTRY, packed: bool = False) -> str:
    """The statement that adds one partition's gauge changes to its rows. SQLite: ?1 a
    JSON array of [by, key, gauges...] (`packed`: one grouping's rows of the compiled
    rollup, `packed_rows`, whose keys with no change are left out here), ?2 the partition,
    ?3 the commit's seq; PostgreSQL: the temporary table `cm_gauges` of the compiled
    rollup's rows (`consumer.store.postgres.aggregate`), keys with no change left out."""
    cols = [g.column for g in registry.gauges]
    add = ", ".join([*(f"{c} = backlog.{c} + excluded.{c}" for c in cols), "seq = excluded.seq"])
    if d is SQLITE and packed:  # a rolled-up row: (by, win, start, key, *gauges, bins)
        rolled = [f"c{4 + i}" for i in range(len(cols))]
        changed = " OR ".join(f"{v} <> 0" for v in rolled)
        return (
            f"INSERT INTO backlog SELECT c0, c3, ?2, {', '.join(rolled)}, ?3 FROM packed_rows(?1) "
            f"WHERE {changed} ON CONFLICT (by, key, partition) DO UPDATE SET {add}"
        )
    if d is SQLITE:
        values = ", ".join(f"value->>{i + 2}" for i in range(len(cols)))
        return (
            f"INSERT INTO backlog SELECT value->>0, value->>1, ?2, {values}, ?3 FROM json_each(?1) "
            f"WHERE true ON CONFLICT (by, key, partition) DO UPDATE SET {add}"
        )
    changed = " OR ".join(f"{c} <> 0" for c in cols)
    listed = ", ".join(["by", "key", "partition", *cols, "seq"])
    return (
        f"INSERT INTO backlog ({listed}) SELECT {listed} FROM cm_gauges WHERE {changed} "
        f"ON CONFLICT (by, key, partition) DO UPDATE SET {add}"
    )


def backlog_query(d: Dialect, where: str, registry: Registry = REGISTRY) -> str:
    """A grouping's gauges summed over partitions, keys in order, those all 0 left out."""
    sums = [f"CAST(sum({g.column}) AS BIGINT)" for g in registry.gauges]
    nonzero = " OR ".join(f"sum({g.column}) <> 0" for g in registry.gauges)
    return (
        f"SELECT key, {', '.join(sums)} FROM backlog WHERE {where} GROUP BY key HAVING {nonzero} ORDER BY key"
    )


def backlog_of_keys(d: Dialect, registry: Registry = REGISTRY) -> str:
    """Some keys' gauges summed over partitions, zeros included (the metrics topic's values
    of the keys whose gauges changed), in one query: (grouping, key, gauges...) of each key
    that has rows. SQLite: ?1 a JSON array of [grouping, key]; PostgreSQL: two text arrays."""
    sums = ", ".join(f"CAST(sum(b.{g.column}) AS BIGINT)" for g in registry.gauges)
    if d is SQLITE:
        keys = "(SELECT value->>0 AS kb, value->>1 AS kk FROM json_each(?1)) AS k"
    else:
        keys = "unnest(%s::text[], %s::text[]) AS k(kb, kk)"
    return (
        f"SELECT k.kb, k.kk, {sums} FROM {keys} JOIN backlog AS b ON b.by = k.kb AND b.key = k.kk "
        "GROUP BY k.kb, k.kk"
    )
