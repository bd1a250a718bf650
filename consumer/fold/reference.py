"""The aggregation fold: conversation events in, metric facts out. Pure: no I/O, no clock.

`PartitionFold` owns one Kafka partition's conversations (the gateway keys events by
conversation, so all of a conversation's events share a partition). A conversation's
state is a small JSON list, kept encoded (a compact str) while idle and decoded while a batch
touches it, which keeps hundreds of thousands of conversations in little memory:

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

A closure is the first close when it is earlier (time, then event id) than `first`: it
counts, and the old one is taken back in its window (a fact of -1). The counted first
assignment is the earliest assignment (time, then event id) at or after `created`; when
a late created or assigned event changes it, the old duration is retracted and the new
one added, in the window of the assignment.

time_to_close of a closure = closedAt minus the latest start of the conversation at or
before closedAt. A late created/opened event can change that for a closure already
counted: the fold then retracts the old duration and adds the new one.

What a commit hands to the store is a `Delta` (`consumer.fold.delta`): one `Fact` per
closure, reopen or correction, ingest lag summed per channel type and hour, and the
closures themselves. The stores turn facts into metric rows in SQL.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence
from typing import Any, Final, Protocol

import orjson

from consumer.fold.delta import (
    _A_LIMIT,
    _C_LIMIT,
    A_APP,
    A_CHANNEL,
    A_ID,
    A_INBOX,
    A_TIME,
    ASSIGNS,
    C_APP,
    C_CHANNEL,
    C_CLOSED,
    C_HASH,
    C_INBOX,
    C_START,
    CLOSURE_EVENT_ID,
    CLOSURES,
    CREATED_AT,
    F_CLOSED,
    F_HASH,
    F_ID,
    FIRST,
    L_APP,
    L_CHANNEL,
    L_ID,
    L_INBOX,
    L_KIND,
    L_TIME,
    LAST,
    LATEST,
    SEEN,
    STARTS,
    Conversation,
    ConvKey,
    Delta,
    Fact,
    MemKey,
    conv_key,
    mem_key,
)
from consumer.fold.facts import Dims, FactMaker
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, KINDS, OPENED, SNOOZED, Event, from_record
from consumer.fold.registry import REGISTRY, Registry

#: the conditions (`consumer.fold.registry.CONDITIONS`) that hold for a closure, by
#: unread + 2 * window_expired
_CONDITIONS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"unread"}),
    frozenset({"window_expired"}),
    frozenset({"unread", "window_expired"}),
)
_NONE: frozenset[str] = frozenset()


def last_time_of(blob: str) -> int:
    """A stored conversation's newest event time, without decoding all of it."""
    return int(blob[1 : blob.index(",")])


class PartitionFold:
    """Applies one partition's events to its conversations and to its pending Delta.

    Args:
        partition: the Kafka partition.
        idle: encoded conversations, as loaded from the store.
        watermark: newest event time seen on the partition.
        max_seen: event ids remembered per conversation (oldest forgotten first).
        registry: the metrics to fold: its counters count the events they declare, and its
            facts have the registry's layout (`consumer.fold.delta.layout_of`).
    """

    def __init__(
        self,
        partition: int,
        idle: dict[ConvKey, str] | None = None,
        watermark: int = 0,
        *,
        max_seen: int = 256,
        registry: Registry = REGISTRY,
    ) -> None:
        self.partition = partition
        self._facts = FactMaker(registry)
        self._inbox_app = registry.groups_by_inbox_or_app
        #: first_closes or time_to_first_assignment folded: conversations keep `first`,
        #: `created` and `assigns` (the module docstring)
        self._firsts = self._facts.first_close is not None or self._facts.ttfa is not None
        #: the gauges folded: conversations keep their latest event too
        self._gauges = bool(registry.gauges)
        self.delta = Delta()
        self.idle: dict[MemKey, str] = {} if idle is None else {mem_key(*k): b for k, b in idle.items()}
        self.hot: dict[MemKey, Conversation] = {}  # touched since the last commit
        self.watermark = watermark
        self.max_seen = max_seen
        self.duplicates = 0

    def __len__(self) -> int:
        """Idle conversations."""
        return len(self.idle)

    @property
    def hot_count(self) -> int:
        """Conversations touched since the last `take_changes`."""
        return len(self.hot)

    def conversations(self) -> dict[ConvKey, str]:
        """The idle conversations, encoded, by (account, conversation id)."""
        return {conv_key(k): b for k, b in self.idle.items()}

    def snapshot(self, chunk: int = 100_000) -> list[bytes]:
        """Every idle conversation, encoded as JSON texts of at most `chunk` conversations
        each (see `decode_snapshot`; a store's values have size limits: SQLite's is 1 GB).
        Call between commits (no hot state)."""
        items = list(self.idle.items())
        return [orjson.dumps(items[i : i + chunk]) for i in range(0, len(items), chunk)] or [b"[]"]

    def conversation(self, key: MemKey) -> Conversation:
        conv = self.hot.get(key)
        if conv is None:
            blob = self.idle.get(key)
            conv = [0, [], [], []] if blob is None else orjson.loads(blob)
            if self._firsts and len(conv) == SEEN + 1:
                conv.extend((legacy_first(conv), None, []))
            if self._gauges and len(conv) == ASSIGNS + 1:
                conv.append(None)
            self.hot[key] = conv
        return conv

    def apply(self, e: Event) -> bool:
        """Fold one event; False when it was a duplicate and changed nothing."""
        kind, h, a, c, ch, t, last_read, last_inbound, rec, inbox, app, window_expires, event_id = e
        if not self._inbox_app:  # the registry groups by neither: keep neither
            inbox = app = None
        # mem_key(a, c), inlined: this runs for every event
        conv = self.conversation((a << 32) | c if 0 <= a < _A_LIMIT and 0 <= c < _C_LIMIT else (a, c))
        check_range(e, conv)
        seen = conv[SEEN]
        if h in seen:
            self.duplicates += 1
            return False
        seen.append(h)
        if len(seen) > self.max_seen:
            del seen[0]
        before = gauges_of(conv) if self._gauges else None
        if t > self.watermark:
            self.watermark = t
        if t > conv[LAST]:
            conv[LAST] = t
        delta = self.delta
        if rec is not None:
            delta.add_lag(ch, t, rec - t * 1000)
        if kind == CLOSED:
            starts = conv[STARTS]
            i = bisect_right(starts, t)
            start = starts[i - 1] if i else None
            facts = self._facts
            conditions = _CONDITIONS[
                (last_inbound is not None and (last_read is None or last_read < last_inbound))
                + 2 * (window_expires is not None and window_expires < t)
            ]
            dims: Dims = (ch, a, inbox, app)
            fact = facts.counted(kind, conditions, dims, t)
            ttc = None if start is None else t - start
            if ttc is not None and facts.ttc is not None:
                fact = facts.with_ttc(fact, dims, t, 1, ttc)
            taken_back = None
            if facts.first_close is not None:
                first = conv[FIRST]
                if (
                    first is None
                    or t < first[F_CLOSED]
                    or (t == first[F_CLOSED] and first[F_ID] is not None and event_id < first[F_ID])
                ):
                    fact = facts.first_closed(fact, dims, t, 1)
                    if first is not None and first[F_ID] is not None:
                        taken_back = facts.first_closed(
                            None, self._closure_dims(a, conv, first[F_HASH]), first[F_CLOSED], -1
                        )
                    conv[FIRST] = [t, event_id, h]
            if fact is not None:
                delta.facts.append(tuple(fact))
            if taken_back is not None:
                delta.facts.append(tuple(taken_back))
            # inbox and app only where the closure has one (`consumer.fold.delta.C_INBOX`)
            conv[CLOSURES].append(
                [h, t, ch, start] if inbox is None and app is None else [h, t, ch, start, inbox, app]
            )
            delta.closures[h] = (h, self.partition, a, c, ch, t, ttc, inbox, app, event_id)
        else:
            fact = self._facts.counted(kind, _NONE, (ch, a, inbox, app), t)
            if kind == ASSIGNED and self._facts.ttfa is not None:
                self._assigned(e, conv, fact, inbox, app)
            elif fact is not None:
                delta.facts.append(tuple(fact))
            if kind in (CREATED, OPENED):
                insort(conv[STARTS], t)
                if conv[CLOSURES]:
                    self._correct(a, c, conv, t)
                if kind == CREATED and self._facts.ttfa is not None:
                    self._created(e, conv)
        if self._gauges:
            latest = conv[LATEST]
            if latest is None or t > latest[L_TIME] or (t == latest[L_TIME] and event_id > latest[L_ID]):
                conv[LATEST] = [t, event_id, kind, ch, inbox, app]
            after = gauges_of(conv)
            if after != before:
                if before is not None:
                    delta.add_gauges((before[0][0], a, before[0][1], before[0][2]), before[1], -1)
                if after is not None:
                    delta.add_gauges((after[0][0], a, after[0][1], after[0][2]), after[1], 1)
        return True

    def _closure_dims(self, account: int, conv: Conversation, h: int) -> Dims:
        """The dimensions of the conversation's closure of event hash `h`."""
        for c in conv[CLOSURES]:
            if c[C_HASH] == h:
                inbox, app = (c[C_INBOX], c[C_APP]) if len(c) > C_INBOX else (None, None)
                return (c[C_CHANNEL], account, inbox, app)
        raise AssertionError("a first close is one of its conversation's closures")

    def _assigned(
        self, e: Event, conv: Conversation, fact: list[Any] | None, inbox: int | None, app: int | None
    ) -> None:
        """An assignment arrived: it may be the conversation's first (time to first assignment)."""
        old = first_assignment(conv)
        mine = [e.time, e.event_id, e.channel_type, inbox, app]
        insort(conv[ASSIGNS], mine, key=_by_time_and_id)
        new = first_assignment(conv)
        if new is mine:
            ttfa = e.time - conv[CREATED_AT]
            assert self._facts.ttfa is not None
            fact = self._facts.with_value(
                self._facts.ttfa, fact, (e.channel_type, e.account, inbox, app), e.time, 1, ttfa
            )
            self.delta.facts.append(tuple(fact))
            if old is not None:
                self._retract_assignment(e.account, old, conv[CREATED_AT])
            self._counted_assignment(e.account, e.conversation, conv, new)
            return
        if fact is not None:
            self.delta.facts.append(tuple(fact))
        if new is not None and _by_time_and_id(mine) >= _by_time_and_id(new):
            # after the counted one (or its equal: a redelivery the dedupe memory had
            # forgotten, kept after it by insort): it can never count
            conv[ASSIGNS].remove(mine)

    def _created(self, e: Event, conv: Conversation) -> None:
        """A created event arrived: the conversation's created time may move earlier, and
        its first assignment (or its duration) with it."""
        was = conv[CREATED_AT]
        if was is not None and was <= e.time:
            return
        old = first_assignment(conv)
        conv[CREATED_AT] = e.time
        new = first_assignment(conv)
        if new is None:
            return
        if old is not None:
            self._retract_assignment(e.account, old, was)
        facts = self._facts
        assert facts.ttfa is not None
        dims: Dims = (new[A_CHANNEL], e.account, new[A_INBOX], new[A_APP])
        fact = facts.with_value(facts.ttfa, None, dims, new[A_TIME], 1, new[A_TIME] - e.time)
        self.delta.facts.append(tuple(fact))
        self._counted_assignment(e.account, e.conversation, conv, new)

    def _retract_assignment(self, account: int, old: list[Any], created: int) -> None:
        facts = self._facts
        assert facts.ttfa is not None
        dims: Dims = (old[A_CHANNEL], account, old[A_INBOX], old[A_APP])
        fact = tuple(facts.with_value(facts.ttfa, None, dims, old[A_TIME], -1, old[A_TIME] - created))
        self.delta.facts.append(fact)
        self.delta.retractions.append(fact)

    def _counted_assignment(
        self, account: int, conversation: int, conv: Conversation, new: list[Any]
    ) -> None:
        """Record the counted first assignment (the store's first_assignments row) and forget
        the assignments after it (none of them can become the first)."""
        assigns = conv[ASSIGNS]
        del assigns[assigns.index(new) + 1 :]
        self.delta.first_assignments[(account, conversation)] = (
            account, conversation, self.partition, new[A_CHANNEL], new[A_INBOX], new[A_APP],
            new[A_TIME], new[A_TIME] - conv[CREATED_AT],
        )  # fmt: skip

    def _correct(self, account: int, conversation: int, conv: Conversation, new_start: int) -> None:
        """A start at `new_start` arrived: fix closures whose latest start it now is."""
        for c in conv[CLOSURES]:
            closed_at, start = c[C_CLOSED], c[C_START]
            if closed_at < new_start or (start is not None and start >= new_start):
                continue
            inbox, app = (c[C_INBOX], c[C_APP]) if len(c) > C_INBOX else (None, None)
            dims: Dims = (c[C_CHANNEL], account, inbox, app)
            facts = self.delta.facts
            if start is not None:
                old = closed_at - start
                retraction: Fact = tuple(self._facts.with_ttc(None, dims, closed_at, -1, old))
                facts.append(retraction)
                self.delta.retractions.append(retraction)
            c[C_START] = new_start
            ttc = closed_at - new_start
            facts.append(tuple(self._facts.with_ttc(None, dims, closed_at, 1, ttc)))
            # the event id where this commit folded the closure (the state keeps none)
            was = self.delta.closures.get(c[C_HASH])
            self.delta.closures[c[C_HASH]] = (
                c[C_HASH], self.partition, account, conversation, c[C_CHANNEL], closed_at, ttc, inbox, app,
                None if was is None else was[CLOSURE_EVENT_ID],
            )  # fmt: skip

    def take_changes(self) -> tuple[Delta, dict[ConvKey, str]]:
        """Hand over the pending delta and the touched conversations, encoded; start afresh."""
        delta, self.delta = self.delta, Delta()
        # .decode(): orjson's bytes keep a 4 KiB buffer; the str is exactly as long as the JSON
        changed = {k: orjson.dumps(c).decode() for k, c in self.hot.items()}
        self.idle.update(changed)
        self.hot = {}
        return delta, {conv_key(k): b for k, b in changed.items()}

    def expire(self, ttl: int, max_conversations: int | None = None) -> list[ConvKey]:
        """Forget idle conversations: older than `ttl` seconds of event time, and the
        longest-idle ones beyond `max_conversations`. Call between commits (no hot state)."""
        horizon = self.watermark - ttl
        gone = [k for k, b in self.idle.items() if last_time_of(b) < horizon]
        for k in gone:
            self._forget(k)
        if max_conversations is not None and len(self.idle) > max_conversations:
            # longest idle first, ties by (account, conversation id): the same in the compiled fold
            by_age = sorted(self.idle, key=lambda k: (last_time_of(self.idle[k]), conv_key(k)))
            over = by_age[: len(by_age) - max_conversations]
            for k in over:
                self._forget(k)
            gone.extend(over)
        return [conv_key(k) for k in gone]

    def _forget(self, k: MemKey) -> None:
        """Drop an idle conversation, and take its gauges back (into the pending delta)."""
        blob = self.idle.pop(k)
        if self._gauges:
            conv = orjson.loads(blob)
            g = gauges_of(conv) if len(conv) > LATEST else None
            if g is not None:
                self.delta.add_gauges((g[0][0], conv_key(k)[0], g[0][1], g[0][2]), g[1], -1)


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


def _by_time_and_id(a: list[Any]) -> tuple[int, str]:
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


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _in_i64(*values: int) -> None:
    if any(not _I64_MIN <= v <= _I64_MAX for v in values):
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


class Fold(Protocol):
    """What the consumer needs of a partition's fold: `PartitionFold` here, or the same
    compiled (`consumer.fold.native`)."""

    @property
    def partition(self) -> int: ...
    @property
    def delta(self) -> Delta: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def hot_count(self) -> int: ...

    watermark: int

    def __len__(self) -> int: ...
    def apply(self, e: Event, /) -> bool: ...
    def take_changes(self) -> tuple[Delta, dict[ConvKey, str]]: ...
    def expire(self, ttl: int, max_conversations: int | None = None) -> list[ConvKey]: ...
    def snapshot(self, chunk: int = 100_000) -> list[bytes]: ...
    def conversations(self) -> dict[ConvKey, str]: ...


class _Message(Protocol):  # what apply_batch reads of a confluent_kafka.Message
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


BatchResult = tuple[list[int], int, int, list[int]]
"""(events folded per kind, duplicates, ignored records, indices of undecodable records)"""


def apply_batch(
    folds: dict[int, Fold], msgs: Sequence[_Message], records: Sequence[object], offsets: dict[int, int]
) -> BatchResult:
    """Fold a consumed batch: `msgs[i]` decoded as `records[i]` (a dict, or the DecodeError
    of a poison record). Messages of a partition without a fold (revoked meanwhile) are
    skipped; `offsets[p]` becomes the offset after partition p's last message. Poison
    records (undecodable, or refused by `check_range`) come back as indices."""
    if len(msgs) != len(records):
        raise ValueError("apply_batch: as many records as messages, please")
    folded = [0] * len(KINDS)
    duplicates = ignored = 0
    dead: list[int] = []
    for i, (m, rec) in enumerate(zip(msgs, records, strict=True)):
        p: int = m.partition()  # type: ignore[assignment]  # set on every consumed message
        fold = folds.get(p)
        if fold is None:
            continue
        if isinstance(rec, dict):
            ev = from_record(rec)
            if ev is None:
                ignored += 1
            else:
                try:
                    applied = fold.apply(ev)
                except OverflowError:  # out of range: a poison record, like an undecodable one
                    dead.append(i)
                else:
                    if applied:
                        folded[ev.kind] += 1
                    else:
                        duplicates += 1
        else:
            dead.append(i)
        offsets[p] = m.offset() + 1  # type: ignore[operator]  # set on every consumed message
    return folded, duplicates, ignored, dead
