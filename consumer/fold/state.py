"""A conversation's state in a fold: its layout, and what is read from it.

A conversation's state is a small JSON list:

    [last_time, starts, closures, seen]
    starts   = sorted created/opened event times
    closures = [[event_hash, closed_at, channel_type, start or null(, inbox, app)], ...]
               (inbox and app where the closure has one of them: a fold whose registry
               groups by neither keeps neither, and closures stored before they existed
               have neither)
    seen     = event hashes already counted (the dedupe memory, newest last)

and, where the registry folds first_closes or time_to_first_assignment, three more:

    [..., first, created, assigns]
    first    = the first close: [closed_at, event id, event hash] or null (an event id of
               null: a state stored before first_closes, whose first close was never counted)
    created  = the earliest created event's time, or null
    assigns  = [[assigned_at, event id, channel_type, inbox, app], ...] sorted: the
               assignments that are or may become the first one (those after the counted
               one never can: the created time and the first assignment only move earlier)

and, where the registry folds the gauges (which need the three above), one more:

    [..., latest]
    latest   = the latest event: [time, event id, kind, channel_type, inbox, app] or null
               (the latest by time, ties by the larger event id; null: a state stored
               before the gauges, which counts in them from its next event on)

A conversation counts in the gauges at its latest event's channel type, account, inbox and
app: open when that event is a created, opened or assigned one, and unassigned too when
it has no assigned event (`assigns` is empty: it keeps at least the counted assignment,
or all of them while none can count); snoozed when it is a snoozed one. When an event
changes that, the fold takes the old contribution back at the old key and adds the new
one (`Delta.gauges`); a forgotten conversation (`expire`) is taken back.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Final

from consumer.fold.delta import (
    A_ID,
    A_TIME,
    ASSIGNS,
    C_CLOSED,
    C_HASH,
    C_START,
    CLOSURES,
    CREATED_AT,
    L_APP,
    L_CHANNEL,
    L_INBOX,
    L_KIND,
    LATEST,
    STARTS,
    Conversation,
)
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, OPENED, SNOOZED, Event


def last_time_of(blob: str) -> int:
    """A stored conversation's newest event time, without decoding all of it."""
    return int(blob[1 : blob.index(",")])


_OPEN: Final = frozenset({CREATED, OPENED, ASSIGNED})


def gauges_of(conv: Conversation) -> tuple[tuple[str, int | None, int | None], tuple[int, int, int]] | None:
    """Where a conversation counts in the gauges ((channel type, inbox, app) of its latest
    event) and what it counts there ((open, unassigned, snoozed)); None: nowhere."""
    latest = conv[LATEST]
    if latest is None:
        return None
    kind = latest[L_KIND]
    if kind in _OPEN:
        counted = (1, 0 if conv[ASSIGNS] else 1, 0)
    elif kind == SNOOZED:
        counted = (0, 0, 1)
    else:
        return None
    return (latest[L_CHANNEL], latest[L_INBOX], latest[L_APP]), counted


def legacy_first(conv: Conversation) -> list[Any] | None:
    """The first close of a state stored before first_closes: its earliest closure (ties:
    the smaller event hash, its id being unknown), marked never counted (id None)."""
    if not conv[CLOSURES]:
        return None
    c = min(conv[CLOSURES], key=lambda c: (c[C_CLOSED], c[C_HASH]))
    return [c[C_CLOSED], None, c[C_HASH]]


def by_time_and_id(a: list[Any]) -> tuple[int, str]:
    return a[A_TIME], a[A_ID]


def first_assignment(conv: Conversation) -> list[Any] | None:
    """The assignment time to first assignment counts: the earliest (time, event id) at or
    after the conversation's created time; None without a created event or such an
    assignment."""
    created = conv[CREATED_AT]
    if created is None:
        return None
    for a in conv[ASSIGNS]:
        if a[A_TIME] >= created:
            return a  # type: ignore[no-any-return]
    return None


#: the range of the stores' integers (SQLite's and PostgreSQL's BIGINT): times, counts, sums, ids
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def _in_i64(*values: int) -> None:
    if any(not I64_MIN <= v <= I64_MAX for v in values):
        raise OverflowError("event time arithmetic outside the 64-bit range")


def check_range(e: Event, conv: Conversation) -> None:
    """Refuse (OverflowError), before it changes anything, an event whose time arithmetic
    leaves 64 bits: an ingest lag, a duration, a window start. The store's integers are
    64-bit; such a record (nanoseconds sent as seconds, say) goes to the dead-letter topic."""
    t = e.time
    _in_i64(t - t % 86400)
    if e.received_ms is not None:
        _in_i64(t * 1000, e.received_ms - t * 1000)
    if e.kind == CLOSED:
        starts = conv[STARTS]
        i = bisect_right(starts, t)
        if i:
            _in_i64(t - starts[i - 1])
    elif e.kind in (CREATED, OPENED):
        for c in conv[CLOSURES]:
            if c[C_CLOSED] >= t and not (c[C_START] is not None and c[C_START] >= t):
                _in_i64(c[C_CLOSED] - t)
    if len(conv) > ASSIGNS:  # time to first assignment folded
        if e.kind == CREATED:
            for a in conv[ASSIGNS]:
                if a[A_TIME] >= t:
                    _in_i64(a[A_TIME] - t)
        elif e.kind == ASSIGNED and conv[CREATED_AT] is not None and t >= conv[CREATED_AT]:
            _in_i64(t - conv[CREATED_AT])
