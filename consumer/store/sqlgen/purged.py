"""What a purge of the rows past their retention leaves behind: for each window, the start
below which it deleted the rows, in the store's `meta` table. A commit writes no row of a
window below it: a late event would otherwise make a purged row again, holding only
itself (a count the API and the metrics topics would serve as the window's: wrong)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from consumer.fold.windows import WINDOWS

#: the `meta` row holding the horizons, a JSON object {window: start}
PURGED_BEFORE = "purged_before"

#: the groupings metric_rows holds rows of, each found by one seek of its primary key
#: (by, win, start, ...): a purge deletes grouping by grouping, each a range of that key.
#: `DELETE ... WHERE win = ? AND start < ?` alone read the whole table, once per window,
#: every minute on the writer's thread (SQLite: ~180 ms per window for 2,000,000 rows)
STORED_GROUPINGS = """
WITH RECURSIVE b(by) AS (
    SELECT min(by) FROM metric_rows
    UNION ALL SELECT (SELECT min(by) FROM metric_rows WHERE by > b.by) FROM b WHERE b.by IS NOT NULL
) SELECT by FROM b WHERE by IS NOT NULL"""
#: one grouping's rows of a window below a start (? marks: `outbox.with_marks` for PostgreSQL)
PURGE_ROWS = "DELETE FROM metric_rows WHERE by = ? AND win = ? AND start < ?"


def horizons(value: str | bytes | None) -> dict[str, int]:
    """The horizons of a `meta` value (none before the first purge); windows it does not
    know are left out (they go into SQL as literals)."""
    if not value:
        return {}
    return {w: int(start) for w, start in orjson.loads(value).items() if w in WINDOWS}


def advanced(was: Mapping[str, int], now: Mapping[str, int]) -> str:
    """The `meta` value after a purge to `now`: a window's horizon never goes back (the
    newest event time it is measured from only grows, but a store's retention may be
    lengthened between runs: rows once purged stay so)."""
    merged = {**was}
    for w, start in now.items():
        merged[w] = max(start, merged.get(w, start))
    return orjson.dumps(dict(sorted(merged.items()))).decode()


def retained(hz: Mapping[str, int], win: str = "win", start: str = "start") -> str:
    """SQL true of a row whose window the store has not purged (`win` and `start` name its
    columns); "true" before the first purge."""
    if not hz:
        return "true"
    return " AND ".join(f"({win} <> '{w}' OR {start} >= {int(s)})" for w, s in sorted(hz.items()))


def kept(hz: Mapping[str, int], win: str, start: int) -> bool:
    """`retained` of one row, in Python (the reference rollup's rows)."""
    return start >= hz.get(win, start)
