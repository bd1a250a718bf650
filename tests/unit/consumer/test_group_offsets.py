"""Members of one consumer group writing different stores (a SQLite file per container)
each fold only the partitions they hold: the one that takes a partition over sees the
group's committed offset in Kafka past its store's and says so (`ahead_of_the_store`).
The rule at its boundaries here; two real consumers on two files: tests/integration."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from consumer.stream.partitions import ahead_of_the_store


@pytest.mark.parametrize(
    ("starts", "group", "ahead"),
    [
        ({0: 100}, {0: 100}, None),  # the store's own offsets, committed to Kafka after it: equal
        ({0: 100}, {0: 99}, None),  # Kafka's async commit behind (lost at a crash): fine
        ({0: 100}, {0: 101}, "0 (group 101, store 100)"),
        ({0: None}, {0: 0}, None),
        ({0: None}, {0: 1}, "0 (group 1, store none)"),
        ({0: None, 1: 5}, {}, None),  # no offsets in Kafka: a new group
        ({0: None, 1: 5, 2: 7}, {1: 1_500_000, 2: 7}, "1 (group 1,500,000, store 5)"),
        ({3: None, 1: 2}, {3: 4, 1: 3}, "1 (group 3, store 2), 3 (group 4, store none)"),
    ],
)
def test_the_partitions_whose_group_offset_is_past_the_stores(
    starts: dict[int, int | None], group: dict[int, int], ahead: str | None
) -> None:
    said = ahead_of_the_store(starts, group)
    if ahead is None:
        assert said is None
        return
    assert said is not None and said.startswith(
        f"partition(s) {ahead}: the consumer group's committed offset"
    )
    assert "PostgreSQL, not a SQLite file each" in said


class Committed:
    """A consumer whose `committed` answers these TopicPartitions, or raises."""

    def __init__(self, answer: list[Any] | Exception) -> None:
        self.answer = answer
        self.asked: list[Any] = []

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.asked.append(([tp.partition for tp in partitions], timeout))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_groups_offsets_leave_out_partitions_without_one_and_a_coordinator_that_does_not_answer() -> None:
    from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition

    from consumer.stream.clients import group_offsets

    failed = SimpleNamespace(
        partition=2, offset=9, error=KafkaError(KafkaError._TIMED_OUT)
    )  # its error is read-only
    answer = [
        TopicPartition("t", 0, 120),
        TopicPartition("t", 1, OFFSET_INVALID),
        failed,
        TopicPartition("t", 3, 0),
    ]
    consumer = Committed(answer)
    assert group_offsets(consumer, "t", [0, 1, 2, 3]) == {0: 120, 3: 0}  # type: ignore[arg-type]
    assert consumer.asked == [([0, 1, 2, 3], 5)]  # bounded: it runs inside a rebalance callback
    timed_out = Committed(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    assert group_offsets(timed_out, "t", [0]) == {}  # type: ignore[arg-type]
    nothing = Committed([])
    assert group_offsets(nothing, "t", []) == {} and nothing.asked == []  # type: ignore[arg-type]
