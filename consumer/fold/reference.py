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
from typing import Protocol

import orjson

from consumer.fold.delta import (
    _A_LIMIT,
    _C_LIMIT,
    C_APP,
    C_CHANNEL,
    C_CLOSED,
    C_HASH,
    C_INBOX,
    C_START,
    CLOSURES,
    LAST,
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
from consumer.fold.model import CLOSED, CREATED, KINDS, OPENED, Event, from_record
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
            self.hot[key] = conv
        return conv

    def apply(self, e: Event) -> bool:
        """Fold one event; False when it was a duplicate and changed nothing."""
        kind, h, a, c, ch, t, last_read, last_inbound, rec, inbox, app, window_expires = e
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
            conditions = _CONDITIONS[
                (last_inbound is not None and (last_read is None or last_read < last_inbound))
                + 2 * (window_expires is not None and window_expires < t)
            ]
            dims: Dims = (ch, a, inbox, app)
            fact = self._facts.counted(kind, conditions, dims, t)
            ttc = None if start is None else t - start
            if ttc is not None and self._facts.ttc is not None:
                fact = self._facts.with_ttc(fact, dims, t, 1, ttc)
            if fact is not None:
                delta.facts.append(tuple(fact))
            # inbox and app only where the closure has one (`consumer.fold.delta.C_INBOX`)
            conv[CLOSURES].append(
                [h, t, ch, start] if inbox is None and app is None else [h, t, ch, start, inbox, app]
            )
            delta.closures[h] = (h, self.partition, a, c, ch, t, ttc, inbox, app)
        else:
            fact = self._facts.counted(kind, _NONE, (ch, a, inbox, app), t)
            if fact is not None:
                delta.facts.append(tuple(fact))
            if kind in (CREATED, OPENED):
                insort(conv[STARTS], t)
                if conv[CLOSURES]:
                    self._correct(a, c, conv, t)
        return True

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
            self.delta.closures[c[C_HASH]] = (
                c[C_HASH], self.partition, account, conversation, c[C_CHANNEL], closed_at, ttc, inbox, app,
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
            del self.idle[k]
        if max_conversations is not None and len(self.idle) > max_conversations:
            # longest idle first, ties by (account, conversation id): the same in the compiled fold
            by_age = sorted(self.idle, key=lambda k: (last_time_of(self.idle[k]), conv_key(k)))
            over = by_age[: len(by_age) - max_conversations]
            for k in over:
                del self.idle[k]
            gone.extend(over)
        return [conv_key(k) for k in gone]


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
