"""The closures behind a number (`GET /v1/closures/conversations`): one account's closures
in a time span, read from the closures table, in either dialect.

`first_close` is computed here, at query time, from the closures table, not kept by the
folds: a closure is its conversation's first when no closure of the same conversation is
earlier (closed_at, then event id). It is right as soon as a late earlier closure is
committed, in every metric set (the default `closures` set folds no first_closes), and
costs the store one more index entry per closure (`closures_by_conversation`: each page
row's check is one index probe) instead of fold state and a rewritten row per retraction.

Closures stored before the table kept event ids have none (NULL): they sort as the empty
id (before every known id of the same second) and then by event hash, both in the page
order and in the first-close tie; their `event_id` is null in the JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.store import sqlgen

#: a page position: the (closed_at, event id or "", event hash) of the last row handed out
After = tuple[int, str, int]


@dataclass(frozen=True)
class ClosureListing:
    """What one page asks for: an account's closures with closed_at in [start, end)."""

    account: int
    start: int
    end: int
    channel_type: str | None = None
    inbox: int | None = None
    after: After | None = None
    limit: int = 1000


@dataclass(frozen=True)
class ListedClosure:
    account: int
    conversation: int
    event_id: str | None
    channel_type: str
    inbox: int | None
    closed_at: int
    time_to_close: int | None
    event_hash: int
    first_close: bool

    @property
    def position(self) -> After:
        """Where the page after this row starts (`ClosureListing.after`)."""
        return (self.closed_at, self.event_id or "", self.event_hash)


def _sql(q: ClosureListing, dialect: sqlgen.Dialect) -> tuple[str, list[Any]]:
    m = dialect.mark
    # PostgreSQL: ids compared by bytes as SQLite and the folds do (the column is "C" too)
    collate = ' COLLATE "C"' if dialect.name == "postgresql" else ""
    # SQLite's planner, without statistics, would read the account's earlier closures by
    # the primary key (all of them) instead of the conversation's by its index
    indexed = "" if dialect.name == "postgresql" else " INDEXED BY closures_by_conversation"

    def order(alias: str) -> str:
        return f"{alias}.closed_at, coalesce({alias}.event_id, ''){collate}, {alias}.event_hash"

    where = [f"c.account = {m}", f"c.closed_at >= {m}", f"c.closed_at < {m}"]
    args: list[Any] = [q.account, q.start, q.end]
    if q.channel_type is not None:
        where.append(f"c.channel_type = {m}")
        args.append(q.channel_type)
    if q.inbox is not None:
        where.append(f"c.inbox = {m}")
        args.append(q.inbox)
    if q.after is not None:
        # the first term lets the primary key / account index start the range there
        where.append(f"c.closed_at >= {m} AND ({order('c')}) > ({m}, {m}, {m})")
        args.extend([q.after[0], *q.after])
    sql = (
        "SELECT c.account, c.conversation, c.event_id, c.channel_type, c.inbox, c.closed_at, "
        f"c.ttc, c.event_hash, NOT EXISTS (SELECT 1 FROM closures AS e{indexed} WHERE e.account = c.account "
        "AND e.conversation = c.conversation AND e.closed_at <= c.closed_at "
        f"AND ({order('e')}) < ({order('c')})) "
        f"FROM closures AS c WHERE {' AND '.join(where)} ORDER BY {order('c')} LIMIT {m}"
    )
    args.append(q.limit)
    return sql, args


def list_closures(
    q: ClosureListing,
    dialect: sqlgen.Dialect,
    fetch: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
) -> list[ListedClosure]:
    """The page `q` asks for (up to `q.limit` closures), `fetch(sql, args)` running a query
    in the store's dialect."""
    sql, args = _sql(q, dialect)
    return [
        ListedClosure(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in fetch(sql, args)
    ]
