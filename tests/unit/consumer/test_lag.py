"""The consumer's lag per partition (consumer.stream.clients.lag_of): every assigned
partition counted from the start, the broker asked only for what the client has not cached,
and a broker that does not answer asked once per refresh."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.stream.clients import WATERMARK_TIMEOUT, lag_of

UNKNOWN = (-1001, -1001)  # librdkafka's OFFSET_INVALID: not cached yet


class FakeConsumer:
    """Cached and broker watermarks per partition; records the broker round trips."""

    def __init__(self, cached: dict[int, tuple[int, int]], broker: dict[int, tuple[int, int]] | None) -> None:
        self.cached, self.broker, self.asked = cached, broker, []

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> Any:
        if cached:
            return self.cached.get(tp.partition, UNKNOWN)
        assert timeout == WATERMARK_TIMEOUT
        self.asked.append(tp.partition)
        if self.broker is None:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return self.broker[tp.partition]


def test_cached_watermarks_and_positions_need_no_broker() -> None:
    c = FakeConsumer({0: (0, 500), 1: (0, 70)}, broker={})
    assert lag_of(c, "t", {0: 100, 1: 70}, [0, 1]) == {0: 400, 1: 0}
    assert c.asked == []


def test_partitions_not_reached_yet_count_from_their_low_watermark() -> None:
    """A fresh consumer: partition 1 has no record processed (no position) and nothing
    fetched (no cached watermark); partition 2 has its store offset but no fetch yet."""
    c = FakeConsumer({0: (0, 500)}, broker={1: (20, 900), 2: (0, 300)})
    positions = {0: 100, 2: 250}
    assert lag_of(c, "t", positions, [0, 1, 2]) == {0: 400, 1: 880, 2: 50}
    assert c.asked == [1, 2]
    # partition 1's start is kept: once fetched from (cached), no broker round trip for it
    assert positions == {0: 100, 1: 20, 2: 250}
    c.cached.update({1: (20, 900), 2: (0, 300)})
    c.asked.clear()
    assert lag_of(c, "t", positions, [0, 1, 2]) == {0: 400, 1: 880, 2: 50} and c.asked == []


def test_a_silent_broker_is_asked_once_per_refresh() -> None:
    c = FakeConsumer({0: (0, 500)}, broker=None)
    assert lag_of(c, "t", {0: 100}, [1, 0, 2]) == {0: 400}
    assert c.asked == [1]  # not again for partition 2


def test_a_position_past_the_cached_watermark_is_no_lag() -> None:
    c = FakeConsumer({0: (0, 500)}, broker={})
    assert lag_of(c, "t", {0: 501}, [0]) == {0: 0}
