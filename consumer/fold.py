"""The aggregation fold: conversation events in, row deltas out. Pure: no I/O, no clock.

`PartitionFold` owns what one Kafka partition needs to count each event once: its dedupe
memory and the state of its conversations (a conversation's events share one partition,
the gateway keys them so). Deltas of metric rows accumulate in the partition's `Delta` until
the consumer commits them with the partition offsets in one store transaction.

time_to_close of a closure = closedAt minus the latest created/opened time of the same
conversation at or before closedAt. A late created/opened event can change that for a
closure already counted: the fold then retracts the old duration and adds the new one.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, field
from typing import Final

from consumer.model import CLOSED, CREATED, OPENED, Event
from consumer.sketch import bin_of
from consumer.windows import ALL, ALL_START, SIZED

BY_CHANNEL: Final = "channel_type"
BY_ACCOUNT: Final = "account"

RowKey = tuple[str, str, str, int]  # (by, key, window, window_start)


class RowDelta:
    """Changes to one metric row since the last commit."""

    __slots__ = (
        "bins",
        "closed_unread",
        "closures",
        "recheck",
        "reopens",
        "ttc_count",
        "ttc_max",
        "ttc_min",
        "ttc_sum",
    )

    def __init__(self) -> None:
        self.closures = 0
        self.reopens = 0
        self.closed_unread = 0
        self.ttc_count = 0
        self.ttc_sum = 0
        self.ttc_min: int | None = None
        self.ttc_max: int | None = None
        self.bins: dict[int, int] = {}
        #: a duration was retracted: min/max must be recomputed from the closures table
        self.recheck = False

    def add_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count += 1
        self.ttc_sum += seconds
        if self.ttc_min is None or seconds < self.ttc_min:
            self.ttc_min = seconds
        if self.ttc_max is None or seconds > self.ttc_max:
            self.ttc_max = seconds
        self.bins[b] = self.bins.get(b, 0) + 1

    def retract_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count -= 1
        self.ttc_sum -= seconds
        self.bins[b] = self.bins.get(b, 0) - 1
        self.recheck = True


@dataclass(slots=True)
class Closure:
    """A counted closure, kept so that a late start can correct its duration."""

    event_hash: int
    closed_at: int
    channel_type: str
    start: int | None  # the start its duration was computed from


@dataclass(slots=True)
class Conversation:
    starts: list[int] = field(default_factory=list)  # sorted created/opened times
    closures: list[Closure] = field(default_factory=list)
    last_time: int = 0  # newest event time, for retention


ClosureRow = tuple[int, int, int, str, int, int | None]
# (event_hash, partition, account, channel_type, closed_at, ttc)


@dataclass
class Delta:
    """Everything the next commit writes besides offsets and per-partition state."""

    rows: dict[RowKey, RowDelta] = field(default_factory=dict)
    closures: dict[int, ClosureRow] = field(default_factory=dict)
    events: int = 0

    def row(self, key: RowKey) -> RowDelta:
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = RowDelta()
        return r

    def clear(self) -> None:
        self.rows.clear()
        self.closures.clear()
        self.events = 0


def row_keys(channel_type: str, account: int, t: int) -> list[RowKey]:
    """The 8 rows an event at time `t` counts in: 2 groupings x (3 windows + all time)."""
    acc = str(account)
    keys: list[RowKey] = []
    for name, size in SIZED:
        start = t - t % size
        keys.append((BY_CHANNEL, channel_type, name, start))
        keys.append((BY_ACCOUNT, acc, name, start))
    keys.append((BY_CHANNEL, channel_type, ALL, ALL_START))
    keys.append((BY_ACCOUNT, acc, ALL, ALL_START))
    return keys


class DedupeMemory:
    """Event ids seen on a partition, bounded by size (two generations) and by age.

    Remembers at least the newest `max_ids // 2` ids and at most `max_ids`; a generation
    whose newest event time is older than `ttl` seconds behind the partition's newest
    event is forgotten early. A redelivery older than that bound would count again.
    """

    def __init__(self, max_ids: int, ttl: int) -> None:
        self.max_ids = max_ids
        self.ttl = ttl
        self.old: set[int] = set()
        self.old_time = 0
        self.new: set[int] = set()
        self.new_time = 0
        self.generation = 0
        self.unsaved: list[int] = []

    def add(self, h: int, t: int) -> bool:
        """Remember `h`; False when it was already remembered (a duplicate)."""
        if h in self.new or h in self.old:
            return False
        self.new.add(h)
        self.unsaved.append(h)
        if t > self.new_time:
            self.new_time = t
        return True

    def maybe_rotate(self, watermark: int) -> bool:
        """Start a new generation when due; True when the oldest one was dropped."""
        dropped = False
        if self.old and self.old_time < watermark - self.ttl:
            self.old, self.old_time, dropped = set(), 0, True
        if len(self.new) >= self.max_ids // 2:
            self.old, self.old_time = self.new, self.new_time
            self.new, self.new_time = set(), 0
            self.generation += 1
            dropped = True
        return dropped


class PartitionFold:
    """Applies one partition's events to its conversations and to its own pending Delta."""

    def __init__(
        self,
        partition: int,
        dedupe: DedupeMemory,
        conversations: dict[tuple[int, int], Conversation] | None = None,
        watermark: int = 0,
    ) -> None:
        self.partition = partition
        self.delta = Delta()
        self.dedupe = dedupe
        self.conversations = conversations if conversations is not None else {}
        self.dirty: set[tuple[int, int]] = set()
        self.watermark = watermark
        self.duplicates = 0

    def apply(self, e: Event) -> bool:
        """Fold one event; False when it was a duplicate and changed nothing."""
        if not self.dedupe.add(e.event_hash, e.time):
            self.duplicates += 1
            return False
        t = e.time
        if t > self.watermark:
            self.watermark = t
        ck = (e.account, e.conversation)
        conv = self.conversations.get(ck)
        if conv is None:
            conv = self.conversations[ck] = Conversation()
        if t > conv.last_time:
            conv.last_time = t
        self.dirty.add(ck)
        self.delta.events += 1
        kind = e.kind
        if kind == CLOSED:
            self._close(e, conv)
        elif kind in (CREATED, OPENED):
            if kind == OPENED:
                for k in row_keys(e.channel_type, e.account, t):
                    self.delta.row(k).reopens += 1
            insort(conv.starts, t)
            if conv.closures:
                self._correct(e.account, conv, t)
        return True

    def _close(self, e: Event, conv: Conversation) -> None:
        t = e.time
        i = bisect_right(conv.starts, t)
        start = conv.starts[i - 1] if i else None
        ttc = None if start is None else t - start
        b = 0 if ttc is None else bin_of(ttc)
        unread = e.unread
        row = self.delta.row
        for k in row_keys(e.channel_type, e.account, t):
            r = row(k)
            r.closures += 1
            if unread:
                r.closed_unread += 1
            if ttc is not None:
                r.add_ttc(ttc, b)
        conv.closures.append(Closure(e.event_hash, t, e.channel_type, start))
        self.delta.closures[e.event_hash] = (e.event_hash, self.partition, e.account, e.channel_type, t, ttc)

    def _correct(self, account: int, conv: Conversation, new_start: int) -> None:
        """A start at `new_start` arrived: fix closures whose latest start it now is."""
        for c in conv.closures:
            if c.closed_at < new_start or (c.start is not None and c.start >= new_start):
                continue
            keys = row_keys(c.channel_type, account, c.closed_at)
            if c.start is not None:
                old = c.closed_at - c.start
                ob = bin_of(old)
                for k in keys:
                    self.delta.row(k).retract_ttc(old, ob)
            c.start = new_start
            ttc = c.closed_at - new_start
            b = bin_of(ttc)
            for k in keys:
                self.delta.row(k).add_ttc(ttc, b)
            self.delta.closures[c.event_hash] = (
                c.event_hash,
                self.partition,
                account,
                c.channel_type,
                c.closed_at,
                ttc,
            )

    def expire(self, ttl: int) -> list[tuple[int, int]]:
        """Forget conversations idle for `ttl` seconds of event time; returns their keys."""
        horizon = self.watermark - ttl
        gone = [k for k, c in self.conversations.items() if c.last_time < horizon]
        for k in gone:
            del self.conversations[k]
            self.dirty.discard(k)
        return gone
