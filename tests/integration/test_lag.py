"""The consumer's lag against a real broker (consumer.stream.clients.lag_of): a partition the
client has not fetched from yet is measured from the broker's watermarks, so a fresh
consumer's lag (its progress lines, `convmetrics_consumer_lag_records`) is whole from the start."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.stream.clients import lag_of


def test_a_fresh_consumers_lag_counts_every_partition_from_the_broker(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for p, n in ((0, 5), (1, 0), (2, 12)):
        for _ in range(n):
            producer.produce(topic, value=b"x", partition=p)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"lag-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])  # nothing fetched yet
        # no positions: each partition from its low watermark; partition 2 from a store offset
        assert lag_of(consumer, topic, {2: 4}, [0, 1, 2]) == {0: 5, 1: 0, 2: 8}
    finally:
        consumer.close()
