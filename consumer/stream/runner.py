"""The Kafka shell around the fold: poll -> decode -> fold -> commit to the store.

Commit ("flush") is one ordered list of steps:
  1. wait until every dead-letter record produced so far is acknowledged by Kafka;
  2. in ONE store transaction: metric deltas, changed conversations, new dedupe ids and
     each partition's next offset (the store, not Kafka, is the source of truth);
  3. commit the same offsets to Kafka, asynchronously, only for lag monitoring.
A crash before 2 replays from the store's offsets with the store's state; a crash after
2 has nothing to replay. On assignment each partition resumes from the store's offset;
on revocation everything pending is committed before the partition is let go.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from consumer.exceptions import (
    ConsumerError,
    OutOfRangeEventError,
)
from consumer.fold import Fold
from consumer.fold.model import from_record, reader_schema
from consumer.fold.native import choose
from consumer.heap import rare_collections
from consumer.store import PartitionCommit, Store, open_store
from consumer.stream.checkpoint import MAX_IN_FLIGHT, CommitHook, CommitReport, StoreWriter
from consumer.stream.clients import dlq_producer, ensure_topic, group_consumer, group_offsets, lag_of
from consumer.stream.dlq import DeadLetters
from consumer.stream.partitions import Snapshots, Stats, ahead_of_the_store, new_fold, take_changes
from consumer.stream.progress import Progress
from consumer.stream.settings import ConsumerSettings
from consumer.stream.watchdog import LOOP, WRITER, Watchdog
from schemas import CONVERSATION_EVENT, Codec, DecodeError, subject
from schemas.event_time import MAX_AHEAD_S, MAX_AHEAD_TEXT
from schemas.exceptions import RegistryUnavailableError
from schemas.kafka import ErrorReport, close_consumer
from schemas.schema_registry import reader_resolver
from schemas.topic_registry import TopicSchemaResolver

log = logging.getLogger(__name__)


#: seconds between two expiries of idle conversations and purges of rows past retention,
#: each done with the next commit (tests/integration/test_consumer.py sees both happen)
EXPIRE_EVERY = 60.0
#: a poll batch is decoded and folded this many records at a time: the decoded dicts
#: (~1.4 KB each with the full metric set) of one slice are alive at once, not a whole
#: batch's (10,000: ~14 MB), which the consumer's resident memory carried (docs/performance.md)
FOLD_SLICE = 2_000
OUT_OF_RANGE = "event time arithmetic (ingest lag, duration or window start) outside the 64-bit range"
#: why an event dated more than MAX_AHEAD_S after the consumer's clock is dead-lettered
AHEAD = (
    f"event time {{when}} is more than {MAX_AHEAD_TEXT} after the consumer's clock (a sender's clock wrong?)"
)


class MetricsConsumer:
    """One member of the consumer group. `run()` until `stop()` (or a stop condition).

    Args:
        settings: the frozen settings of this process.
        store: the store (default: opened from `settings.store_url`).
        on_commit: called on the writer thread after each durable commit (metrics exporters,
            the metrics topic); exceptions are logged, never propagated.
        on_assign: called with the partitions this member was just given, once it has claimed
            them and before it fetches their records (the writer is idle then, so the hook may
            use the store): the metrics topic publishes what a crashed owner left unpublished.
            Exceptions are logged, never propagated.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        *,
        store: Store | None = None,
        on_commit: CommitHook | None = None,
        on_assign: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.s = settings
        #: progress, beaten by the polling loop and the writer: `/healthz` and a stall's log line
        self.watchdog = Watchdog(settings.stall_timeout)
        self.store = store or open_store(
            settings.store_url,
            retention=settings.retention,
            registry=settings.registry,
            # an outage ridden out in a rebalance (claim, load) is progress, not a stall
            on_retry=lambda what: self.watchdog.beat(LOOP, f"{what}: the store unavailable, retrying"),
        )
        self.store.check_topic(settings.topic)
        self.store.check_metric_set(settings.metric_set, switch=settings.switch_metric_set)
        self.codec = Codec(
            subject(CONVERSATION_EVENT),
            reader_schema=reader_schema(settings.registry),
            resolve_unknown=TopicSchemaResolver(settings.bootstrap_servers, timeout=5, kafka=settings.kafka),
            # Confluent-framed records: their schema ids, asked of the registry once per id
            resolve_id=reader_resolver(settings.schema_registry),
        )
        self.fold_kind = choose()
        self.folds: dict[int, Fold] = {}
        self.snapshots = Snapshots(bool(getattr(self.store, "wants_snapshots", False)))
        self.epochs: dict[int, int] = {}
        self.positions: dict[int, int] = {}  # next offset to process, per assigned partition
        self.next_offsets: dict[int, int] = {}  # ... of records not committed to the store yet
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.on_commit = on_commit
        self.on_assign = on_assign
        self._last_lag = 0.0
        self.stats = Stats()
        self.progress = Progress(behind=self.s.poll_batch)
        self._stop = threading.Event()
        self._pending = 0
        self._last_commit = time.monotonic()
        self._last_expire = time.monotonic()
        self.writer = StoreWriter(
            self.store,
            settings.topic,
            self._stop,
            self._committed,
            beat=functools.partial(self.watchdog.beat, WRITER),
        )
        #: refused credentials or failed TLS say so (naming the settings), not a silent retry loop
        self.kafka_errors = ErrorReport(log)
        self.joined_at: float | None = None  # the latest assignment (an empty one included)
        self.consumer = group_consumer(settings, self.kafka_errors)
        self.dlq = DeadLetters(
            dlq_producer(settings, self.kafka_errors),
            settings.dlq_topic,
            ensure=functools.partial(
                ensure_topic,
                settings.bootstrap_servers,
                settings.dlq_topic,
                what="the dead-letter topic",
                kafka=settings.kafka,
                timeout=10,
            ),
        )

    # -- loop -------------------------------------------------------------------------
    def run(self, *, until: Callable[[MetricsConsumer], bool] | None = None) -> None:
        # The store writer needs the GIL between its statements while this thread folds:
        # a short switch interval hands it over in 0.5 ms instead of 5 (bench/results/history.md).
        switch = sys.getswitchinterval()
        try:
            sys.setswitchinterval(min(switch, 0.0005))
            # a batch's ~10,000 decoded dicts and Messages die by refcount, never in cycles:
            # at the default thresholds the cyclic GC traced them (and the pending deltas)
            # dozens of times per batch, ~10% of the polling thread (py-spy)
            with rare_collections():
                self._run(until)
        finally:  # the interpreter's settings go back even when the loop or its cleanup fails
            sys.setswitchinterval(switch)

    def _run(self, until: Callable[[MetricsConsumer], bool] | None) -> None:
        log.info("folding with the %s fold", self.fold_kind.name)
        self.consumer.subscribe(
            [self.s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        watched = threading.Event()
        self.watchdog.watch(watched)
        try:
            while not self._stop.is_set():
                self.watchdog.beat(LOOP, "polling Kafka and folding")
                msgs = self.consumer.consume(self.s.poll_batch, 0.1)
                if msgs:
                    self.process(msgs)
                if self.writer.oldest_done():
                    self.wait_for_commit(keep=len(self.writer.in_flight) - 1)
                behind = len(msgs) >= self.s.poll_batch
                interval = self.s.backlog_flush_interval if behind else self.s.flush_interval
                if self._pending >= self.s.commit_events or time.monotonic() - self._last_commit >= interval:
                    self.commit(wait=False)
                if time.monotonic() - self._last_lag >= 5:
                    self._refresh_lag()
                if until is not None and until(self):
                    break
            self.commit()
        finally:
            watched.set()
            try:
                self.wait_for_commit()
            finally:
                self.writer.shutdown()
                close_consumer(self.consumer)  # bounded: librdkafka may wait forever for a gone broker
                self.dlq.flush(10)

    def stop(self) -> None:
        self._stop.set()

    def process(self, msgs: list[Message]) -> None:
        ok = msgs
        if bad := [m for m in msgs if m.error() is not None]:  # rare: the loop stays out of the way
            for m in bad:
                err = m.error()
                assert err is not None
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise ConsumerError(f"fatal Kafka consumer error: {err}")
                log.warning("Kafka consumer error: %s", err)
            ok = [m for m in msgs if m.error() is None]
        for i in range(0, len(ok), FOLD_SLICE):
            self._fold(ok[i : i + FOLD_SLICE])
        self.positions.update(self.next_offsets)

    def _fold(self, msgs: list[Message]) -> None:
        """Decode and fold one slice of a poll batch (its decoded records die with it)."""
        try:
            decoded = self.codec.decode_many([m.value() or b"" for m in msgs])
        except RegistryUnavailableError as exc:  # not the record's fault: stop, never dead-letter
            raise ConsumerError(
                f"cannot read a Confluent-framed record: {exc}; nothing committed past it"
            ) from None
        ceiling = int(time.time()) + MAX_AHEAD_S
        for fold in self.folds.values():
            fold.ceiling = ceiling
        # messages of partitions revoked while the batch was in flight are skipped
        folded, duplicates, ignored, dead = self.fold_kind.apply_batch(
            self.folds, msgs, decoded, self.next_offsets
        )
        for i in dead:
            self._dead_letter(msgs[i], _poison(decoded[i], ceiling))
        self.stats.count(folded, duplicates, ignored, len(msgs))
        self._pending += len(msgs)

    def _refresh_lag(self) -> None:
        self._last_lag = time.monotonic()
        self.stats.lag = lag_of(self.consumer, self.s.topic, self.positions, list(self.folds))
        # progress only from a whole lag (a partition the broker did not answer for is missing)
        if self.folds and len(self.stats.lag) == len(self.folds):
            lag = sum(self.stats.lag.values())
            if line := self.progress.update(self._last_lag, self.stats.consumed, lag):
                log.info("%s", line)

    def _dead_letter(self, m: Message, error: Exception) -> None:
        self.dlq.send(m, error, self.s.topic)
        self.stats.dead_lettered += 1

    # -- commit -----------------------------------------------------------------------
    def commit(self, *, wait: bool = True) -> None:
        """Steps 1-3 of the module docstring for every partition with news.

        The snapshot is taken here, on the polling thread; the store transaction and the
        Kafka offset commit run on the writer thread while the next batch is decoded and
        folded (SQLite releases the GIL while it works). At most MAX_IN_FLIGHT commits are
        handed over at once: past that, this waits for the oldest (the writer thread runs
        them in order, and refuses the ones after a failed one).
        """
        self._last_commit = time.monotonic()
        if self.dlq.failed is not None:
            return
        self.wait_for_commit(keep=MAX_IN_FLIGHT - 1)
        if not self.next_offsets:
            if wait:
                self.wait_for_commit()
            return
        started = time.perf_counter()
        self.dlq.confirm(30)
        expire = time.monotonic() - self._last_expire > EXPIRE_EVERY
        if expire:
            self._last_expire = time.monotonic()
        ttl = (self.s.conversation_ttl, self.s.max_conversations) if expire else None
        commits: list[PartitionCommit] = []
        for p, offset in self.next_offsets.items():
            fold = self.folds[p]
            delta, changed, expired = take_changes(fold, ttl)
            # at most one snapshot per commit (Snapshots.take)
            first = all(c.snapshot is None for c in commits)
            snapshot = self.snapshots.take(p, fold, len(changed) + len(expired), first)
            commits.append(
                PartitionCommit(p, delta, offset, fold.watermark, changed, expired, self.epochs[p], snapshot)
            )
        self.next_offsets = {}
        self._pending = 0
        self.writer.submit(commits, expire, started)
        if wait:
            self.wait_for_commit()

    def _committed(self, report: CommitReport) -> None:
        """Writer thread, after each durable commit: count it, then the caller's hook."""
        self.stats.commits += 1
        if self.on_commit is not None:
            self.on_commit(report)

    def wait_for_commit(self, keep: int = 0) -> None:
        """Block until all but the newest `keep` commits in flight are durable, oldest
        first; re-raise a failure.

        Then hand their offsets to Kafka (for lag monitoring only). This runs on the polling
        thread: the Kafka consumer must not be called from the writer thread while the
        polling thread sits in a rebalance callback.
        """
        if len(self.writer.in_flight) > keep:
            self.watchdog.beat(LOOP, "waiting for the store writer's commit")
        for offsets, fenced in self.writer.results(keep):
            if offsets:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            for p in fenced:  # until the group hands them back, their records are skipped
                if self.folds.pop(p, None) is not None:
                    self.stats.fenced += 1
                self.next_offsets.pop(p, None)
                self.positions.pop(p, None)

    # -- rebalance --------------------------------------------------------------------
    def not_ready(self) -> str | None:
        """Why the consumer is not ready (for `/readyz`), or None: it has joined its group,
        and Kafka has not refused its credentials or TLS since."""
        errors = self.kafka_errors
        if self.joined_at is None:
            return "not in the consumer group yet" + (f": {errors.last}" if errors.last else "")
        if errors.last_at is not None and errors.last_at > self.joined_at:
            return errors.last
        return None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined_at = time.monotonic()
        self.wait_for_commit()
        starts: dict[int, int | None] = {}
        for tp in partitions:
            self.watchdog.beat(LOOP, f"claiming and loading partition {tp.partition}")
            self.epochs[tp.partition] = self.store.claim(self.s.topic, tp.partition, self.owner)
            fold, offset = new_fold(self.store, self.s.topic, tp.partition, self.s, self.fold_kind)
            self.folds[tp.partition] = fold
            self.snapshots.logged[tp.partition] = 0
            if offset is not None:
                self.positions[tp.partition] = offset
            starts[tp.partition] = offset
            tp.offset = OFFSET_BEGINNING if offset is None else offset
        if (
            ahead := ahead_of_the_store(starts, group_offsets(consumer, self.s.topic, list(starts)))
        ) is not None:
            log.warning("%s", ahead)
        log.info(
            "assigned %s (partition, offset it starts from; %d: the beginning)",
            sorted((tp.partition, tp.offset) for tp in partitions),
            OFFSET_BEGINNING,
        )
        if self.on_assign is not None and partitions:
            try:
                self.on_assign([tp.partition for tp in partitions])
            except Exception:
                log.exception("on assignment of %s", sorted(tp.partition for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit()
        self._drop(partitions)
        log.info("revoked %s", sorted(tp.partition for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Another member may own these now: drop their uncommitted work, commit nothing."""
        self.wait_for_commit()
        self._drop(partitions)
        log.warning("lost %s: uncommitted work dropped", sorted(tp.partition for tp in partitions))

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.folds.pop(tp.partition, None)
            self.next_offsets.pop(tp.partition, None)
            self.positions.pop(tp.partition, None)
            self.stats.lag.pop(tp.partition, None)


def _poison(record: object, ceiling: int) -> Exception:
    """Why a record of a batch was refused: undecodable (its DecodeError), dated after the
    consumer's clock plus MAX_AHEAD_S, or times the metrics cannot count."""
    if isinstance(record, DecodeError):
        return record
    ev = from_record(record) if isinstance(record, dict) else None
    if ev is not None and ev.time > ceiling:
        try:
            when = datetime.fromtimestamp(ev.time, UTC).isoformat()
        except (ValueError, OverflowError, OSError):  # past year 9999
            when = str(ev.time)
        return OutOfRangeEventError(AHEAD.format(when=when))
    return OutOfRangeEventError(OUT_OF_RANGE)
