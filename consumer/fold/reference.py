"""The aggregation fold: conversation events in, metric facts out. Pure: no I/O, no clock.

`PartitionFold` owns one Kafka partition's conversations (the gateway keys events by
account, or by conversation with `--key-by conversation`: either way all of a
conversation's events share a partition). A conversation's state
(its layout and what it means: `consumer.fold.state`) is kept encoded (a compact str) while
idle and decoded while a batch touches it, which keeps hundreds of thousands of
conversations in little memory.

A closure is the first close when it is earlier (time, then event id) than `first`: it
counts, and the old one is taken back in its window (a fact of -1). Time to first
assignment has its rules in `consumer.fold.assignments`.

time_to_close of a closure = closedAt minus the latest start of the conversation at or
before closedAt. A late created/opened event can change that for a closure already
counted: the fold then retracts the old duration and adds the new one.

What a commit hands to the store is a `Delta` (`consumer.fold.delta`): one `Fact` per
closure, reopen or correction, ingest lag summed per channel type and hour, and the
closures themselves. The stores roll facts up into metric rows (consumer.store.rollup).
"""

from __future__ import annotations

from bisect import bisect_right, insort

import orjson

from consumer.fold.assignments import FirstAssignments
from consumer.fold.delta import (
    _A_LIMIT,
    _C_LIMIT,
    ASSIGNS,
    C_APP,
    C_CHANNEL,
    C_CLOSED,
    C_HASH,
    C_INBOX,
    C_START,
    CHUNK,
    CLOSURE_EVENT_ID,
    CLOSURES,
    F_CLOSED,
    F_HASH,
    F_ID,
    FIRST,
    L_ID,
    L_TIME,
    LAST,
    LATEST,
    SEEN,
    STARTS,
    Changes,
    Conversation,
    ConvKey,
    Delta,
    Fact,
    MemKey,
    conv_key,
    json_chunks,
    mem_key,
)
from consumer.fold.facts import Dims, FactMaker
from consumer.fold.model import ASSIGNED, CLOSED, CREATED, OPENED, Event
from consumer.fold.registry import REGISTRY, Registry
from consumer.fold.state import (
    I64_MAX,
    check_range,
    gauges_of,
    last_time_of,
    legacy_first,
)

#: the conditions (`consumer.fold.registry.CONDITIONS`) that hold for a closure, by
#: unread + 2 * window_expired
_CONDITIONS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"unread"}),
    frozenset({"window_expired"}),
    frozenset({"unread", "window_expired"}),
)
_NONE: frozenset[str] = frozenset()


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
        self._assignments = FirstAssignments(self._facts, partition)
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
        #: events later than this are refused as out of range (`Fold.ceiling`)
        self.ceiling = I64_MAX
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
        return json_chunks(list(self.idle.items()), chunk) or [b"[]"]

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
        if t > self.ceiling:
            raise OverflowError("event time after the consumer's clock plus MAX_AHEAD_S")
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
                self._assignments.assigned(self.delta, e, conv, fact, inbox, app)
            elif fact is not None:
                delta.facts.append(tuple(fact))
            if kind in (CREATED, OPENED):
                insort(conv[STARTS], t)
                if conv[CLOSURES]:
                    self._correct(a, c, conv, t)
                if kind == CREATED and self._facts.ttfa is not None:
                    self._assignments.created(self.delta, e, conv)
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

    def take_changes(self, chunk: int = CHUNK) -> tuple[Delta, Changes]:
        """Hand over the pending delta and the touched conversations, encoded (in chunks of
        at most `chunk`); start afresh."""
        delta, self.delta = self.delta, Delta()
        # .decode(): orjson's bytes keep a 4 KiB buffer; the str is exactly as long as the JSON
        changed = {k: orjson.dumps(c).decode() for k, c in self.hot.items()}
        self.idle.update(changed)
        self.hot = {}
        items = [(*conv_key(k), b) for k, b in changed.items()]
        return delta, Changes(tuple(json_chunks(items, chunk)), len(items))

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
