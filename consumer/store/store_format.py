"""Which releases may open a store: its format, a number in `meta`.

Every change to what the rows mean that an older release would get wrong (it would write
rows a newer release reads twice, or read rows it does not know) raises `FORMAT`, and
the migration that makes it stamps the store with the new number. A release then refuses
a store stamped with a format above its own: at open (the consumer and `serve` exit with
a StoreError naming both numbers), and at each commit, for a consumer of an older release
still running while a newer one upgraded the store under it (a rolling upgrade): it stops
before its commit lands, and the newer release folds its records again from the store's
offsets. A store without the row (made before formats were noted) is format 1.

Formats: 1, the stores before 2026-12-08; 2, the source grouping's rows under its short
name (`source`, not `account,inbox,app,channel_type`: `consumer.store.upgrade.rename`
renames the rows a store holds under the former name at open)."""

from __future__ import annotations

from consumer.exceptions import StoreError
from consumer.store.upgrade import Run

#: the format this release reads and writes
FORMAT = 2
META_NAME = "store format"


def found(run: Run, mark: str) -> int:
    """The store's format (1 where it notes none)."""
    rows = run(f"SELECT value FROM meta WHERE name = {mark}", (META_NAME,))
    return int(rows[0][0]) if rows else 1


def check(run: Run, mark: str, where: str, *, committing: bool = False) -> None:
    """Refuse (StoreError) a store a newer release stamped: at open, before any migration;
    `committing`: in a commit's transaction, the store having been upgraded since this
    process opened it."""
    if (theirs := found(run, mark)) <= FORMAT:
        return
    if committing:
        raise StoreError(
            f"store {where} was upgraded to format {theirs} by a newer convmetrics release while "
            f"this consumer ran; this release writes format {FORMAT}, so it stops before its "
            "commit lands (the newer release folds those records again from the store's offsets)"
        )
    raise StoreError(
        f"store {where} is in format {theirs}, made by a newer convmetrics release; this "
        f"release reads and writes format {FORMAT} only: run the newer release against it "
        "(its consumers and serve alike)"
    )


def stamp(run: Run, mark: str) -> None:
    """Note `FORMAT` as the store's, unless a newer release noted a higher one meanwhile."""
    run(
        f"INSERT INTO meta VALUES ({mark}, {mark}) ON CONFLICT (name) DO UPDATE "
        "SET value = excluded.value WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        (META_NAME, str(FORMAT)),
    )
