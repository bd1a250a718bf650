"""The aggregation fold: conversation events in, row deltas out. Pure: no I/O, no clock.

`PartitionFold` owns one Kafka partition's conversations (the gateway keys events by
conversation, so all of a conversation's events share a partition). A conversation's
state is a small JSON list, kept encoded (a compact str) while idle and decoded while a batch
touches it, which keeps hundreds of thousands of conversations in little memory:

    [last_time, starts, closures, seen]
    starts   = sorted created/opened event times
    closures = [[event_hash, closed_at, channel_type, start or null], ...]
    seen     = event hashes already counted (the dedupe memory, newest last)

time_to_close of a closure = closedAt minus the latest start of the conversation at or
before closedAt. A late created/opened event can change that for a closure already
counted: the fold then retracts the old duration and adds the new one.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from consumer.model import CLOSED, CREATED, OPENED, Event
from consumer.sketch import LAG_BASE, bin_of, lag_bin_of
from consumer.windows import ALL, ALL_START, SIZED

BY_CHANNEL: Final = "channel_type"
BY_ACCOUNT: Final = "account"

RowKey = tuple[str, str, str, int]  # (by, key, window, window_start)
ConvKey = tuple[int, int]  # (account, conversation id)
Conversation = list[Any]  # [last_time, starts, closures, seen], see the module docstring
LAST, STARTS, CLOSURES, SEEN = 0, 1, 2, 3
C_HASH, C_CLOSED, C_CHANNEL, C_START = 0, 1, 2, 3


class RowDelta:
    """Changes to one metric row since the last commit."""

    __slots__ = (
        "bins", "closed_unread", "closures", "lag_count", "lag_max", "lag_sum", "recheck", "reopens",
        "ttc_count", "ttc_max", "ttc_min", "ttc_sum",
    )  # fmt: skip

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
        self.lag_count = 0  # ingest lag (receive time - event time), milliseconds
        self.lag_sum = 0
        self.lag_max: int | None = None

    def add_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count += 1
        self.ttc_sum += seconds
        if self.ttc_min is None or seconds < self.ttc_min:
            self.ttc_min = seconds
        if self.ttc_max is None or seconds > self.ttc_max:
            self.ttc_max = seconds
        self.bins[b] = self.bins.get(b, 0) + 1

    def add_lag(self, millis: int) -> None:
        self.lag_count += 1
        self.lag_sum += millis
        if self.lag_max is None or millis > self.lag_max:
            self.lag_max = millis
        b = lag_bin_of(millis)
        self.bins[b] = self.bins.get(b, 0) + 1

    def merge_lag(self, other: RowDelta) -> None:
        self.lag_count += other.lag_count
        self.lag_sum += other.lag_sum
        if other.lag_max is not None and (self.lag_max is None or other.lag_max > self.lag_max):
            self.lag_max = other.lag_max
        for b, n in other.bins.items():
            if b >= LAG_BASE // 2:
                self.bins[b] = self.bins.get(b, 0) + n

    def retract_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count -= 1
        self.ttc_sum -= seconds
        self.bins[b] = self.bins.get(b, 0) - 1
        self.recheck = True


ClosureRow = tuple[int, int, int, int, str, int, int | None]
# (event_hash, partition, account, conversation, channel_type, closed_at, ttc)


@dataclass
class Delta:
    """Metric changes of one partition since its last commit."""

    rows: dict[RowKey, RowDelta] = field(default_factory=dict)
    closures: dict[int, ClosureRow] = field(default_factory=dict)

    def row(self, key: RowKey) -> RowDelta:
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = RowDelta()
        return r

    def roll_up_lag(self) -> None:
        """The fold records ingest lag in 1-hour channel rows only (cheap per event, and
        few rows to write); this adds each of them to its 1-day and all-time rows."""
        hourly = [(k, r) for k, r in self.rows.items() if r.lag_count and k[2] == "1h"]
        for (by, key, _, start), r in hourly:
            self.row((by, key, "1d", start - start % 86400)).merge_lag(r)
            self.row((by, key, ALL, ALL_START)).merge_lag(r)


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
    """

    def __init__(
        self,
        partition: int,
        idle: dict[ConvKey, str] | None = None,
        watermark: int = 0,
        *,
        max_seen: int = 256,
    ) -> None:
        self.partition = partition
        self.delta = Delta()
        self.idle: dict[ConvKey, str] = idle if idle is not None else {}
        self.hot: dict[ConvKey, Conversation] = {}  # touched since the last commit
        self.watermark = watermark
        self.max_seen = max_seen
        self.duplicates = 0

    def conversation(self, key: ConvKey) -> Conversation:
        conv = self.hot.get(key)
        if conv is None:
            blob = self.idle.get(key)
            conv = [0, [], [], []] if blob is None else orjson.loads(blob)
            self.hot[key] = conv
        return conv

    def apply(self, e: Event) -> bool:
        """Fold one event; False when it was a duplicate and changed nothing."""
        conv = self.conversation((e.account, e.conversation))
        seen = conv[SEEN]
        h = e.event_hash
        if h in seen:
            self.duplicates += 1
            return False
        seen.append(h)
        if len(seen) > self.max_seen:
            del seen[0]
        t = e.time
        if t > self.watermark:
            self.watermark = t
        if t > conv[LAST]:
            conv[LAST] = t
        if e.received_ms is not None:
            self.delta.row((BY_CHANNEL, e.channel_type, "1h", t - t % 3600)).add_lag(e.received_ms - t * 1000)
        kind = e.kind
        if kind == CLOSED:
            self._close(e, conv)
        elif kind in (CREATED, OPENED):
            if kind == OPENED:
                row = self.delta.row
                for k in row_keys(e.channel_type, e.account, t):
                    row(k).reopens += 1
            insort(conv[STARTS], t)
            if conv[CLOSURES]:
                self._correct(e.account, e.conversation, conv, t)
        return True

    def _close(self, e: Event, conv: Conversation) -> None:
        t = e.time
        starts = conv[STARTS]
        i = bisect_right(starts, t)
        start = starts[i - 1] if i else None
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
        conv[CLOSURES].append([e.event_hash, t, e.channel_type, start])
        self.delta.closures[e.event_hash] = (
            e.event_hash, self.partition, e.account, e.conversation, e.channel_type, t, ttc,
        )  # fmt: skip

    def _correct(self, account: int, conversation: int, conv: Conversation, new_start: int) -> None:
        """A start at `new_start` arrived: fix closures whose latest start it now is."""
        for c in conv[CLOSURES]:
            closed_at, start = c[C_CLOSED], c[C_START]
            if closed_at < new_start or (start is not None and start >= new_start):
                continue
            keys = row_keys(c[C_CHANNEL], account, closed_at)
            row = self.delta.row
            if start is not None:
                old = closed_at - start
                ob = bin_of(old)
                for k in keys:
                    row(k).retract_ttc(old, ob)
            c[C_START] = new_start
            ttc = closed_at - new_start
            b = bin_of(ttc)
            for k in keys:
                row(k).add_ttc(ttc, b)
            self.delta.closures[c[C_HASH]] = (
                c[C_HASH], self.partition, account, conversation, c[C_CHANNEL], closed_at, ttc,
            )  # fmt: skip

    def take_changes(self) -> tuple[Delta, dict[ConvKey, str]]:
        """Hand over the pending delta and the touched conversations, encoded; start afresh."""
        delta, self.delta = self.delta, Delta()
        delta.roll_up_lag()
        # .decode(): orjson's bytes keep a 4 KiB buffer; the str is exactly as long as the JSON
        changed = {k: orjson.dumps(c).decode() for k, c in self.hot.items()}
        self.idle.update(changed)
        self.hot = {}
        return delta, changed

    def expire(self, ttl: int, max_conversations: int | None = None) -> list[ConvKey]:
        """Forget idle conversations: older than `ttl` seconds of event time, and the
        longest-idle ones beyond `max_conversations`. Call between commits (no hot state)."""
        horizon = self.watermark - ttl
        times = {k: last_time_of(b) for k, b in self.idle.items()}
        gone = [k for k, t in times.items() if t < horizon]
        if max_conversations is not None and len(times) - len(gone) > max_conversations:
            keep = sorted((t, k) for k, t in times.items() if t >= horizon)
            gone.extend(k for _, k in keep[: len(keep) - max_conversations])
        for k in gone:
            del self.idle[k]
        return gone
