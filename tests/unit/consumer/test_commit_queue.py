"""The writer thread runs queued commits in order and never lands one queued after a
failed one (it builds on the failed one's deltas and offsets)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.exceptions import ConsumerError
from consumer.fold import Changes, Delta
from consumer.fold import native as fold_native
from consumer.fold.model import CREATED, Event
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from consumer.stream import partitions, runner
from consumer.stream.checkpoint import MAX_IN_FLIGHT
from consumer.stream.runner import MetricsConsumer
from consumer.stream.settings import ConsumerSettings
from schemas import conversation_codec

from ..schemas.samples import record


class FlakyStore:
    """Refuses its first commit with a bug-like error; records the ones it takes."""

    def __init__(self) -> None:
        self.landed: list[int] = []
        self.calls = 0
        self.release = threading.Event()

    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        self.calls += 1
        self.release.wait(5)  # both commits are queued before the first one ends
        if self.calls == 1:
            raise RuntimeError("disk on fire")
        self.landed.extend(p.next_offset for p in partitions)

    def check_metric_set(self, name: str, *, switch: bool = False) -> None:
        pass

    def check_topic(self, topic: str) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def commit(offset: int) -> list[PartitionCommit]:
    return [PartitionCommit(0, Delta(), offset, 0, Changes())]


def test_a_commit_queued_after_a_failed_one_does_not_land() -> None:
    """The polling thread hands over MAX_IN_FLIGHT commits at once (one today: it waits for
    the last before the next); the writer still refuses any handed over behind a failure."""
    assert MAX_IN_FLIGHT >= 1
    store = FlakyStore()
    c = MetricsConsumer(ConsumerSettings("127.0.0.1:1", topic="t"), store=store)  # type: ignore[arg-type]
    try:
        c.writer.submit(commit(10), False, 0.0)
        c.writer.submit(commit(20), False, 0.0)
        first, second = c.writer.in_flight
        store.release.set()
        with pytest.raises(RuntimeError, match="disk on fire"):
            first.result(10)
        with pytest.raises(ConsumerError, match="earlier store commit failed"):
            second.result(10)
        assert store.calls == 1 and store.landed == []
        # the polling thread sees the real failure, not the refusal that follows it
        with pytest.raises(RuntimeError, match="disk on fire"):
            c.wait_for_commit()
        c.wait_for_commit()  # the refused one is dropped quietly (shutdown re-raises nothing new)
        assert not c.writer.in_flight
    finally:
        c.writer.shutdown()
        c.consumer.close()


class ErrMsg:
    """A consumed message as far as `process` reads it: a value, or an error."""

    def __init__(self, value: bytes | None = None, error: KafkaError | None = None) -> None:
        self._value, self._error = value, error

    def error(self) -> KafkaError | None:
        return self._error

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def topic(self) -> str:
        return "t"


def test_error_messages_are_skipped_and_a_fatal_one_stops(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.db"))
    c = MetricsConsumer(ConsumerSettings("127.0.0.1:1", topic="t"), store=store)
    try:
        eof = KafkaError(KafkaError._PARTITION_EOF)
        transient = KafkaError(KafkaError._TRANSPORT)
        c.process([ErrMsg(b"x"), ErrMsg(error=eof), ErrMsg(error=transient), ErrMsg(b"y")])  # type: ignore[list-item]
        assert c.stats.consumed == 2  # the two values (partition 0 is not assigned: not folded)
        c.process([ErrMsg(b"z")])  # type: ignore[list-item]
        assert c.stats.consumed == 3
        with pytest.raises(ConsumerError, match="fatal Kafka consumer error"):
            c.process([ErrMsg(b"x"), ErrMsg(error=KafkaError(KafkaError._FATAL, fatal=True))])  # type: ignore[list-item]
        assert c.stats.consumed == 3  # nothing of the failed batch counted
    finally:
        c.writer.shutdown()
        c.consumer.close()
        store.close()


class OffsetMsg(ErrMsg):
    def __init__(self, value: bytes, offset: int) -> None:
        super().__init__(value)
        self._offset = offset

    def offset(self) -> int:
        return self._offset


def test_a_batch_folded_in_slices_dead_letters_exactly_its_bad_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll batch is decoded and folded FOLD_SLICE records at a time: every record is
    counted once, and the records that do not decode are dead-lettered, themselves (their
    place within a slice is not their place in the batch)."""
    monkeypatch.setattr(runner, "FOLD_SLICE", 3)
    codec = conversation_codec()
    bad = {2, 3, 7}  # the last of the first slice, the first of the second, one in the third

    def value(i: int) -> bytes:
        r = record("conversation.created", t=1_700_000_000 + i)
        r["id"] = f"00000000-0000-4000-8000-{i:012d}"  # each its own event
        return b"not avro" if i in bad else codec.encode(r)

    msgs = [OffsetMsg(value(i), i) for i in range(8)]
    store = SqliteStore(str(tmp_path / "m.db"))
    c = MetricsConsumer(ConsumerSettings("127.0.0.1:1", topic="t"), store=store)
    dead: list[int] = []
    monkeypatch.setattr(c, "_dead_letter", lambda m, error: dead.append(m.offset()))
    try:
        c.folds[0] = fold_native.choose().new(0)
        c.process(msgs)  # type: ignore[arg-type]
        assert sorted(dead) == sorted(bad)
        assert (c.stats.consumed, c.stats.folded, c.stats.duplicates) == (8, 5, 0)
        assert c.next_offsets == {0: 8}
    finally:
        c.writer.shutdown()
        c.consumer.close()
        store.close()


class SnapshotStore:
    """Keeps a log of conversation changes plus snapshots; records each commit's snapshots."""

    wants_snapshots = True

    def __init__(self) -> None:
        self.snapshots: list[dict[int, int]] = []  # per commit: partition -> its snapshot's chunks

    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        self.snapshots.append({p.partition: len(p.snapshot) for p in partitions if p.snapshot is not None})

    def check_metric_set(self, name: str, *, switch: bool = False) -> None:
        pass

    def check_topic(self, topic: str) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


class NoBroker:
    def commit(self, **_: Any) -> None:
        pass


def test_a_commit_carries_one_snapshot_and_the_others_wait_their_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Partitions that grow alike come due for a snapshot together; one commit holding
    all their snapshots was the consumer's peak memory, so each waits for its own commit.
    Snapshots come in chunks of CHUNK conversations."""
    monkeypatch.setattr(partitions, "CHUNK", 2)
    store = SnapshotStore()
    c = MetricsConsumer(ConsumerSettings("127.0.0.1:1", topic="t"), store=store)  # type: ignore[arg-type]
    c.consumer.close()  # no broker: the commits' offsets go nowhere
    c.consumer = NoBroker()  # type: ignore[assignment]
    try:
        for p in range(3):
            c.folds[p] = fold = fold_native.choose().new(p)
            for conv in range(5):  # 5 conversations: 3 chunks of at most 2
                fold.apply(Event(CREATED, conv + 1, 7, conv, "TELEGRAM", 100, None, None))
            c.epochs[p] = 1
        c.snapshots.logged = {0: 10_000, 1: 9_999, 2: 10_000}  # 0 and 2 due; 1 one record short of it
        for offset in (10, 20, 30):
            c.next_offsets = dict.fromkeys(range(3), offset)
            c.commit()
        # 1 came due with the first commit's records, then had its turn before 2 (due earlier)
        assert store.snapshots == [{0: 3}, {1: 3}, {2: 3}]
        c.next_offsets = dict.fromkeys(range(3), 40)
        c.commit()
        assert store.snapshots[-1] == {}  # each log starts afresh after its snapshot
    finally:
        c.writer.shutdown()
