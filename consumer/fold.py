"""The aggregation fold: conversation events in, metric facts out. Pure: no I/O, no clock.

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

What a commit hands to the store is a `Delta`: one `Fact` per closure, reopen or
correction, ingest lag summed per channel type and hour, and the closures themselves. The
store turns facts into metric rows (SQLite in SQL; `Delta.rows` is the same in Python).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from consumer.model import CLOSED, CREATED, KINDS, OPENED, Event, from_record
from consumer.sketch import bin_of, lag_bin_of
from consumer.windows import ALL, ALL_START, SIZED

BY_CHANNEL: Final = "channel_type"
BY_ACCOUNT: Final = "account"

RowKey = tuple[str, str, str, int]  # (by, key, window, window_start)
ConvKey = tuple[int, int]  # (account, conversation id)
#: how the fold keys a conversation in memory: (account << 32) | id where both fit (one int
#: object instead of a tuple and two ints: ~80 bytes less per conversation), else the tuple
MemKey = int | ConvKey
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

    def add_lags(self, count: int, total: int, most: int, bins: dict[int, int]) -> None:
        self.lag_count += count
        self.lag_sum += total
        if self.lag_max is None or most > self.lag_max:
            self.lag_max = most
        for b, n in bins.items():
            self.bins[b] = self.bins.get(b, 0) + n

    def retract_ttc(self, seconds: int, b: int) -> None:
        self.ttc_count -= 1
        self.ttc_sum -= seconds
        self.bins[b] = self.bins.get(b, 0) - 1
        self.recheck = True


ClosureRow = tuple[int, int, int, int, str, int, int | None]
# (event_hash, partition, account, conversation, channel_type, closed_at, ttc)

Fact = tuple[str, int, int, int, int, int, int, int | None, int | None]
"""What one closure, reopen or correction adds to the 8 rows of `row_keys` it falls in:

    (channel_type, account, time, closures, reopens, closed_unread, ttc_n, ttc, ttc_bin)

ttc_n is +1 when a duration `ttc` is added, -1 when it is retracted (a late start
corrected it), 0 when none. The fold only appends facts (cheap per event); the store
aggregates them per row, in SQL for SQLite, with `Delta.rows` elsewhere."""

LagKey = tuple[str, int]  # (channel type, start of the event time's hour)
Lags = list[Any]  # [count, sum, max, {lag bin: count}] of ingest lags, milliseconds
"""Ingest lag (gateway receive time - event time) counts in the channel type's 1-hour,
1-day and all-time rows only: the fold sums it per channel type and hour (few keys), and
the store rolls those up."""


@dataclass
class Delta:
    """Metric changes of one partition since its last commit."""

    facts: list[Fact] = field(default_factory=list)
    closures: dict[int, ClosureRow] = field(default_factory=dict)
    lags: dict[LagKey, Lags] = field(default_factory=dict)
    #: the facts that retract a duration (also in `facts`): few, and all `recheck` reads
    retractions: list[Fact] = field(default_factory=list)

    def add_lag(self, channel_type: str, t: int, millis: int) -> None:
        key = (channel_type, t - t % 3600)
        agg = self.lags.get(key)
        if agg is None:
            agg = self.lags[key] = [0, 0, millis, {}]
        agg[0] += 1
        agg[1] += millis
        if millis > agg[2]:
            agg[2] = millis
        bins = agg[3]
        b = lag_bin_of(millis)
        bins[b] = bins.get(b, 0) + 1

    @property
    def rows(self) -> dict[RowKey, RowDelta]:
        """The facts aggregated per metric row (computed on each access)."""
        rows: dict[RowKey, RowDelta] = {}

        def row(key: RowKey) -> RowDelta:
            r = rows.get(key)
            if r is None:
                r = rows[key] = RowDelta()
            return r

        for ch, acc, t, closures, reopens, unread, ttc_n, ttc, b in self.facts:
            for k in row_keys(ch, acc, t):
                r = row(k)
                r.closures += closures
                r.reopens += reopens
                r.closed_unread += unread
                if ttc_n > 0:
                    r.add_ttc(ttc, b)  # type: ignore[arg-type]
                elif ttc_n < 0:
                    r.retract_ttc(ttc, b)  # type: ignore[arg-type]
        for (ch, hour), (n, total, most, bins) in self.lags.items():
            for k in lag_keys(ch, hour):
                row(k).add_lags(n, total, most, bins)
        return rows

    def recheck(self) -> dict[RowKey, tuple[int, int]]:
        """Rows that lost durations, with the least and greatest lost: where the row's min
        (max) is not below (above) them, it must be recomputed from the closures."""
        out: dict[RowKey, tuple[int, int]] = {}
        for ch, acc, t, *_, ttc, _ in self.retractions:
            assert ttc is not None  # a retraction always takes back a duration
            for k in row_keys(ch, acc, t):
                lo, hi = out.get(k, (ttc, ttc))
                out[k] = (min(lo, ttc), max(hi, ttc))
        return out


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


def lag_keys(channel_type: str, t: int) -> list[RowKey]:
    """The rows an ingest lag counts in: the channel type's 1-hour, 1-day and all-time rows."""
    return [
        (BY_CHANNEL, channel_type, "1h", t - t % 3600),
        (BY_CHANNEL, channel_type, "1d", t - t % 86400),
        (BY_CHANNEL, channel_type, ALL, ALL_START),
    ]


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
        kind, h, a, c, ch, t, last_read, last_inbound, rec = e
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
            unread = 1 if last_inbound is not None and (last_read is None or last_read < last_inbound) else 0
            if start is None:
                delta.facts.append((ch, a, t, 1, 0, unread, 0, None, None))
                ttc = None
            else:
                ttc = t - start
                delta.facts.append((ch, a, t, 1, 0, unread, 1, ttc, bin_of(ttc)))
            conv[CLOSURES].append([h, t, ch, start])
            delta.closures[h] = (h, self.partition, a, c, ch, t, ttc)
        elif kind in (CREATED, OPENED):
            if kind == OPENED:
                delta.facts.append((ch, a, t, 0, 1, 0, 0, None, None))
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
            ch = c[C_CHANNEL]
            facts = self.delta.facts
            if start is not None:
                old = closed_at - start
                retraction: Fact = (ch, account, closed_at, 0, 0, 0, -1, old, bin_of(old))
                facts.append(retraction)
                self.delta.retractions.append(retraction)
            c[C_START] = new_start
            ttc = closed_at - new_start
            facts.append((ch, account, closed_at, 0, 0, 0, 1, ttc, bin_of(ttc)))
            self.delta.closures[c[C_HASH]] = (
                c[C_HASH], self.partition, account, conversation, c[C_CHANNEL], closed_at, ttc,
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
    compiled (`consumer.fold_native`)."""

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


_A_LIMIT: Final = 2**31
_C_LIMIT: Final = 2**32


def mem_key(account: int, conversation: int) -> MemKey:
    """The in-memory key of a conversation (see `MemKey`)."""
    if 0 <= account < _A_LIMIT and 0 <= conversation < _C_LIMIT:
        return (account << 32) | conversation
    return (account, conversation)


def decode_snapshot(data: bytes | str) -> dict[ConvKey, str]:
    """The conversations of one chunk of a `PartitionFold.snapshot`."""
    return {conv_key(k if isinstance(k, int) else tuple(k)): b for k, b in orjson.loads(data)}


def conv_key(k: MemKey) -> ConvKey:
    """(account, conversation id) of an in-memory key."""
    return k if isinstance(k, tuple) else (k >> 32, k & (_C_LIMIT - 1))
