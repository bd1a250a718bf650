"""The metrics topic's outbox, the same on both stores: the metric rows and backlog keys
a store's partitions changed since their marks (each row keeps the seq of the commit that
last changed it), read back merged over partitions (`Store.changed_since`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from consumer.fold.registry import Registry
from consumer.store import sqlgen
from consumer.store.base import LIVE, OUTBOX_INDEX, OUTBOX_INDEX_NAME, MetricRow
from consumer.store.rows import Fetch, Page


def outbox_indexes(registry: Registry) -> dict[str, str]:
    """The indexes the outbox reads by, name -> DDL (`OUTBOX_INDEX`: made by a store's first
    publication, not with its schema)."""
    out = {OUTBOX_INDEX_NAME: OUTBOX_INDEX}
    if registry.gauges:
        out[sqlgen.BACKLOG_OUTBOX_INDEX_NAME] = sqlgen.BACKLOG_OUTBOX_INDEX
    return out


def changed_rows(
    marks: dict[int, int],
    commits: int,
    fetch: Fetch,
    page: Page,
    dialect: sqlgen.Dialect,
    registry: Registry,
) -> tuple[list[MetricRow], dict[int, int]]:
    """The rows the partitions of `marks` changed after their marks (whole commits, up to
    `commits` of each), merged over partitions, then the gauges of the backlog keys they
    changed (rows of the window LIVE), and the marks that covers. The rows of a grouping,
    window and start are read together, as a ranked page's are (`page`): a full-set
    commit changes tens of thousands of rows, which were a query each."""
    found, live, newest = outbox_keys(marks, commits, fetch, dialect.mark, gauges=bool(registry.gauges))
    keys_at: defaultdict[tuple[str, str, int], list[str]] = defaultdict(list)
    for by, win, start, key in sorted(served_keys(found, registry)):
        keys_at[(by, win, start)].append(key)
    rows: list[MetricRow] = []
    for (by, win, start), keys in keys_at.items():
        rows += sorted(page(by, win, keys, [start], None), key=lambda r: r.key)
    return rows + live_rows(live, fetch, dialect, registry), newest


def served_keys(
    found: Iterable[tuple[str, str, int, str]], registry: Registry
) -> set[tuple[str, str, int, str]]:
    """Changed rows as the rows the topic publishes (`Registry.served`: a source's row as
    the rows derived from it)."""
    return {
        (served, win, start, served_key)
        for by, win, start, key in found
        for served, served_key in registry.served(by, win, key)
    }


def outbox_keys(
    marks: dict[int, int], commits: int, fetch: Fetch, mark: str, *, gauges: bool = False
) -> tuple[set[tuple[str, str, int, str]], set[tuple[str, str]], dict[int, int]]:
    """The (grouping, window, start, key) of the rows the partitions of `marks` changed
    after their marks, in whole commits (up to `commits` of each), the (grouping, key) of
    the backlog rows they changed (`gauges`: the store has a backlog table), and the marks
    that covers. `fetch(sql, args)` runs a query in the store's dialect (`mark`: its placeholder)."""
    changed: set[tuple[str, str, int, str]] = set()
    live: set[tuple[str, str]] = set()
    newest = dict(marks)
    tables = ("metric_rows", "backlog") if gauges else ("metric_rows",)
    for p, since in marks.items():
        # the first `commits` seqs of each table: the first of both are among them (a commit
        # may change gauges and no metric row, such as one that only forgets conversations)
        seqs = sorted(
            {
                seq
                for table in tables
                for (seq,) in fetch(
                    f"SELECT DISTINCT seq FROM {table} WHERE partition = {mark} AND seq > {mark} "
                    f"ORDER BY seq LIMIT {mark}",
                    (p, since, commits),
                )
            }
        )[:commits]
        if not seqs:
            continue
        upto = newest[p] = seqs[-1]
        found = fetch(
            f"SELECT by, win, start, key FROM metric_rows WHERE partition = {mark} AND seq > {mark} "
            f"AND seq <= {mark}",
            (p, since, upto),
        )
        changed.update((by, win, start, key) for by, win, start, key in found)
        if gauges:
            keys = fetch(
                f"SELECT by, key FROM backlog WHERE partition = {mark} AND seq > {mark} AND seq <= {mark}",
                (p, since, upto),
            )
            live.update((by, key) for by, key in keys)
    return changed, live, newest


def live_rows(
    live: Iterable[tuple[str, str]], fetch: Fetch, dialect: sqlgen.Dialect, registry: Registry
) -> list[MetricRow]:
    """The gauges of these (grouping, key)s summed over partitions, zeros included, as
    rows of the window LIVE (what the metrics topic publishes for a changed backlog key),
    read in one query."""
    keys = sorted(live)
    if not keys:
        return []
    sql = sqlgen.backlog_of_keys(dialect, registry)
    if dialect is sqlgen.SQLITE:
        args: tuple[Any, ...] = (orjson.dumps(keys),)
    else:
        args = ([by for by, _ in keys], [key for _, key in keys])
    found = {(by, key): values for by, key, *values in fetch(sql, args)}
    cols = [g.column for g in registry.gauges]
    zeros = [0] * len(cols)
    return [
        MetricRow(by, key, LIVE, 0, dict(zip(cols, found.get((by, key), zeros), strict=True)))
        for by, key in keys
    ]


# -- rows purged past retention: tombstones on the metrics topics --------------------------
#: the `published_marks` partition under which each topic keeps the last purged row it
#: tombstoned (partitions are >= 0; SQLite's one writer is -1)
PURGED = -2
#: a purge of a store that publishes keeps the keys it deletes, in its transaction; `?`s are
#: the window and the cutoff (a dialect's mark replaces them)
KEEP_PURGED = (
    "INSERT INTO purged_rows (by, win, start, key) "
    "SELECT DISTINCT by, win, start, key FROM metric_rows WHERE by = ? AND win = ? AND start < ?"
)
#: whether any metrics topic publishes from the store (else a purge keeps no key)
PUBLISHED = "SELECT 1 FROM published_marks LIMIT 1"
#: the purged keys every topic has tombstoned (a topic that never did counts as none)
FORGET_PURGED = f"""
DELETE FROM purged_rows WHERE id <= (
    SELECT min(coalesce(
        (SELECT q.seq FROM published_marks AS q WHERE q.topic = t.topic AND q.partition = {PURGED}), 0))
    FROM (SELECT DISTINCT topic FROM published_marks) AS t)
"""
PURGED_SINCE = "SELECT id, by, win, start, key FROM purged_rows WHERE id > ? ORDER BY id LIMIT ?"


def with_marks(sql: str, dialect: sqlgen.Dialect) -> str:
    """`sql`'s `?`s as `dialect`'s marks."""
    return sql.replace("?", dialect.mark)


def purged_keys(
    mark: int, fetch: Fetch, dialect: sqlgen.Dialect, registry: Registry, limit: int = 10_000
) -> tuple[list[tuple[str, str, int, str]], int]:
    """The keys of the rows purged after `mark` (as the topics publish them: a source's row
    as the rows derived from it, `served_keys`), in purge order, and the mark that covers."""
    found = fetch(with_marks(PURGED_SINCE, dialect), (mark, limit))
    if not found:
        return [], mark
    keys = served_keys(((by, win, int(start), key) for _, by, win, start, key in found), registry)
    return sorted(keys), int(found[-1][0])
