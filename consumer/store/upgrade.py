"""Upgrading a store's rows when a grouping's window comes to be derived, or a grouping is
renamed: both stores run it at open, once (PostgreSQL in the transaction of its other
migrations, SQLite in one of its own), under the lock that serializes migrations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from consumer.fold.registry import METRIC_SETS, Grouping, Registry
from consumer.store import sqlgen

log = logging.getLogger(__name__)

#: runs one statement with its arguments, returning its rows (none for a statement without)
Run = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def meta_name(grouping: str) -> str:
    """The `meta` row naming the windows a grouping's rows were last read from its source in."""
    return f"derived windows of {grouping}"


def pending(registry: Registry, run: Run, mark: str) -> list[tuple[str, list[str], str]]:
    """The (grouping, windows, source) of each grouping whose rows of some windows this
    store did not yet read from its source: those it keeps rows of its own in others too
    (`sqlgen.has_own_rows`, `account`), its meta row not naming them."""
    out = []
    for g in registry.groupings:
        if g.derived_from is None or not sqlgen.has_own_rows(registry, g.name):
            continue
        windows = list(registry.derived_in(g))
        found = run(f"SELECT value FROM meta WHERE name = {mark}", (meta_name(g.name),))
        if found and found[0][0] == ",".join(windows):
            continue
        before = set(found[0][0].split(",")) if found and found[0][0] else set()
        out.append((g.name, [w for w in windows if w not in before], g.derived_from))
    return out


def drop_doubled_rows(registry: Registry, run: Run, mark: str, where: str) -> None:
    """A store written by a release that stored a grouping's rows of a window that is now
    derived (`account`'s 1m, 1h and 1d rows, before 2026-12-07) AND its source's rows
    (the full set, since 2026-12-06) holds the events of those windows twice once the two
    are read together (`sqlgen.rows_of`): the grouping's own rows of a window start the
    source has rows of too go, the source's rows stay. Own rows the source has no copy of
    (folded before the source was stored, or by the closures set) stay, so only a window
    that holds both kinds of event (the one the source began in) loses the older ones. A
    store without source rows (the closures set's, or a new one) keeps its rows: they are
    read beside what a full-set fold adds. Recorded in `meta`, so it runs once per store."""
    for grouping, windows, source in pending(registry, run, mark):
        has_source = run(f"SELECT 1 FROM metric_rows WHERE by = {mark} LIMIT 1", (source,))
        if has_source and windows:
            log.info(
                "store %s: %s's rows of %s are read from %s's from now on; its own rows of "
                "them, which a release before counted the same events in, are dropped (once)",
                where,
                grouping,
                ", ".join(windows),
                source,
            )
            marks = ", ".join([mark] * len(windows))
            # only the rows the source holds the same window of (an account's source keys
            # are `42|...`): older rows, and a closures-set fold's, have no copy there
            run(
                f"DELETE FROM metric_rows WHERE by = {mark} AND win IN ({marks}) AND EXISTS ("
                f"SELECT 1 FROM metric_rows AS s WHERE s.by = {mark} AND s.win = metric_rows.win "
                "AND s.start = metric_rows.start AND s.key >= metric_rows.key || '|' "
                "AND s.key < metric_rows.key || '}')",
                (grouping, *windows, source),
            )
        run(
            f"INSERT INTO meta VALUES ({mark}, {mark}) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (meta_name(grouping), ",".join(registry.derived_in(registry.grouping(grouping)))),
        )


def renamed(registry: Registry) -> list[tuple[str, Grouping]]:
    """(former name, grouping) of every grouping renamed since a store could hold its rows:
    this registry's and every metric set's (whichever set's process opens a store first
    renames all of its rows)."""
    out: dict[str, Grouping] = {}
    for r in (registry, *METRIC_SETS.values()):
        for g in (*r.groupings, *r.sources):
            out.update((old, g) for old in g.formerly)
    return sorted(out.items(), key=lambda item: item[0])


def renames_pending(registry: Registry, run: Run, mark: str) -> bool:
    """Whether metric rows are stored under a former name (a key seek each): in a store of
    format 1, or one a release before format 2 (or before formats were noted) wrote into
    after the rename."""
    return any(
        run(f"SELECT 1 FROM metric_rows WHERE by = {mark} LIMIT 1", (old,)) for old, _ in renamed(registry)
    )


def rename(registry: Registry, run: Run, mark: str, where: str) -> None:
    """Store format 2: the rows a release before stored under a grouping's former name
    (`Grouping.formerly`: the source grouping's `account,inbox,app,channel_type`) go under
    its name, window by window, each logged with its count (a large store's rename takes a
    while, once); the keys of purged rows waiting for the metrics topics' tombstones too.
    The caller runs it where `renames_pending`, before stamping the store 2."""
    for old, g in renamed(registry):
        for win in registry.windows:
            found = run(f"SELECT count(*) FROM metric_rows WHERE by = {mark} AND win = {mark}", (old, win))
            if not found[0][0]:
                continue
            log.info(
                "store %s: renaming %s's %s rows of %s to %s (once, store format 2)",
                where,
                old,
                f"{found[0][0]:,}",
                win,
                g.name,
            )
            run(
                f"UPDATE metric_rows SET by = {mark} WHERE by = {mark} AND win = {mark}",
                (g.name, old, win),
            )
        run(f"UPDATE purged_rows SET by = {mark} WHERE by = {mark}", (g.name, old))
