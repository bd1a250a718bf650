"""The writer thread runs queued commits in order and never lands one queued after a
failed one (it builds on the failed one's deltas and offsets)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from consumer.exceptions import ConsumerError
from consumer.fold import Delta
from consumer.runner import MAX_IN_FLIGHT, MetricsConsumer
from consumer.settings import ConsumerSettings
from consumer.store import PartitionCommit


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
        first = c._writer.submit(c._write, commit(10), False, 0.0)
        second = c._writer.submit(c._write, commit(20), False, 0.0)
        store.release.set()
        with pytest.raises(RuntimeError, match="disk on fire"):
            first.result(10)
        with pytest.raises(ConsumerError, match="earlier store commit failed"):
            second.result(10)
        assert store.calls == 1 and store.landed == []
        # the polling thread sees the real failure, not the refusal that follows it
        c._in_flight.extend([first, second])
        with pytest.raises(RuntimeError, match="disk on fire"):
            c.wait_for_commit()
        c.wait_for_commit()  # the refused one is dropped quietly (shutdown re-raises nothing new)
        assert not c._in_flight
    finally:
        c._writer.shutdown()
        c.consumer.close()
