"""The writer thread runs queued commits in order and never lands one queued after a
failed one (it builds on the failed one's deltas and offsets)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.exceptions import ConsumerError
from consumer.fold import Delta
from consumer.store import PartitionCommit
from consumer.store.sqlite import SqliteStore
from consumer.stream.checkpoint import MAX_IN_FLIGHT
from consumer.stream.runner import MetricsConsumer
from consumer.stream.settings import ConsumerSettings


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

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def commit(offset: int) -> list[PartitionCommit]:
    return [PartitionCommit(0, Delta(), offset, 0, {})]


def test_a_commit_queued_after_a_failed_one_does_not_land() -> None:
    assert MAX_IN_FLIGHT >= 2
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
