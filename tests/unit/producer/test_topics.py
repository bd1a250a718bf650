"""The key check's watermark query while a new topic's leaders settle (Kafka faked: a broker
answers "not leader" for a moment after a topic is made; tests/integration/test_key_check.py
runs the check itself against a real broker)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from producer import topics


class Answers:
    """A consumer whose watermark query gives the planted answers in turn."""

    def __init__(self, *answers: tuple[int, int] | int) -> None:
        self.answers, self.asked = list(answers), 0

    def get_watermark_offsets(self, _tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, int):
            raise KafkaException(KafkaError(answer))
        return answer


def ask(consumer: Any, within: float) -> tuple[int, int]:
    return topics._watermarks(consumer, TopicPartition("t", 0), time.monotonic() + within)


@pytest.mark.parametrize(
    "settling",
    [
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    ],
)
def test_a_partition_whose_leader_settles_is_asked_again(settling: int) -> None:
    consumer = Answers(settling, settling, (0, 7))
    assert ask(consumer, within=5) == (0, 7)
    assert consumer.asked == 3


def test_any_other_error_is_raised_at_once() -> None:
    consumer = Answers(KafkaError._TRANSPORT, (0, 7))
    with pytest.raises(KafkaException):
        ask(consumer, within=5)
    assert consumer.asked == 1


def test_a_leader_that_never_settles_is_raised_once_the_time_is_up() -> None:
    consumer = Answers(KafkaError.NOT_LEADER_FOR_PARTITION)
    with pytest.raises(KafkaException) as raised:
        ask(consumer, within=0.35)
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION
    assert consumer.asked >= 2  # asked again until the time was up, then raised


@pytest.mark.parametrize(("given", "asked"), [(None, -1), (3, 3)])
def test_the_events_topic_takes_the_brokers_replication_factor_unless_given(
    monkeypatch: pytest.MonkeyPatch, given: int | None, asked: int
) -> None:
    """Not given: -1, the broker's default.replication.factor (KIP-464: a managed cluster's 3;
    a replication factor of 1 there is refused or leaves the events on one disk)."""
    made: dict[str, Any] = {}
    monkeypatch.setattr(topics, "create_topic", lambda *a, **kw: made.update(kw) or True)
    assert topics.ensure_topic("k:9092", "events", partitions=6, replication_factor=given)
    assert made["replication_factor"] == asked and made["partitions"] == 6


def test_the_gateway_and_produce_leave_the_replication_factor_to_the_broker_by_default() -> None:
    from producer.settings import load_settings

    assert load_settings(bootstrap_servers="k:9092").replication_factor is None
    assert load_settings(bootstrap_servers="k:9092", replication_factor=3).replication_factor == 3
