"""The gauges (`Registry.gauges`): live counts, not windowed.

One row per (grouping, key, partition) in the `backlog` table, which commits add to
(a conversation's contribution moves between keys, `consumer.fold.delta.gauge_rows`);
only a partition's owner writes its rows, queries sum them. SQLite keeps one writer slot.
"""

from __future__ import annotations

from consumer.fold.registry import REGISTRY, Registry
from consumer.store.sqlgen.dialect import SQLITE, Dialect


def backlog_table(d: Dialect, registry: Registry = REGISTRY) -> str | None:
    """The `backlog` table, or None when the registry has no gauges."""
    if not registry.gauges:
        return None
    cols = "".join(f"{g.column} {d.integer} NOT NULL, " for g in registry.gauges)
    return (
        f"CREATE TABLE IF NOT EXISTS backlog (by TEXT NOT NULL, key {d.text} NOT NULL, "
        f"partition INTEGER NOT NULL, {cols}PRIMARY KEY (by, key, partition))"
    )


def backlog_upsert(d: Dialect, registry: Registry = REGISTRY) -> tuple[str, str]:
    """The statements that add one partition's gauge changes to its rows and drop the rows
    left at 0. SQLite: ?1 a JSON array of [by, key, gauges...], ?2 the partition; PostgreSQL:
    arrays of by, key, partition and each gauge, then by, key and partition again."""
    cols = [g.column for g in registry.gauges]
    add = ", ".join(f"{c} = backlog.{c} + excluded.{c}" for c in cols)
    zero = " AND ".join(f"{c} = 0" for c in cols)
    if d is SQLITE:
        values = ", ".join(f"value->>{i + 2}" for i in range(len(cols)))
        return (
            f"INSERT INTO backlog SELECT value->>0, value->>1, ?2, {values} FROM json_each(?1) WHERE true "
            f"ON CONFLICT (by, key, partition) DO UPDATE SET {add}",
            f"DELETE FROM backlog WHERE partition = ?2 AND (by, key) IN "
            f"(SELECT value->>0, value->>1 FROM json_each(?1)) AND {zero}",
        )
    arrays = ", ".join(["%s::text[]", "%s::text[]", "%s::int[]", *(["%s::bigint[]"] * len(cols))])
    return (
        f"INSERT INTO backlog SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (by, key, partition) DO UPDATE SET {add}",
        "DELETE FROM backlog WHERE (by, key, partition) IN "
        f"(SELECT * FROM unnest(%s::text[], %s::text[], %s::int[])) AND {zero}",
    )


def backlog_query(d: Dialect, where: str, registry: Registry = REGISTRY) -> str:
    """A grouping's gauges summed over partitions, keys in order, those all 0 left out."""
    sums = [f"CAST(sum({g.column}) AS BIGINT)" for g in registry.gauges]
    nonzero = " OR ".join(f"sum({g.column}) <> 0" for g in registry.gauges)
    return (
        f"SELECT key, {', '.join(sums)} FROM backlog WHERE {where} GROUP BY key HAVING {nonzero} ORDER BY key"
    )
