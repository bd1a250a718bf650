"""The Kafka clients of a group member: its consumer and its dead-letter producer, with the
settings this workload wants and the user's own (`ConsumerSettings.kafka`: security, ...)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from consumer.exceptions import ConsumerError, KafkaUnavailableError
from consumer.stream.settings import ConsumerSettings
from schemas.exceptions import TopicNotMadeError
from schemas.kafka import ErrorReport, client_config, create_topic

log = logging.getLogger(__name__)


def _base(settings: ConsumerSettings, errors: ErrorReport) -> dict[str, Any]:
    # refused credentials or failed TLS are reported (naming the settings), not retried silently
    return {**client_config(settings.bootstrap_servers, settings.kafka), "error_cb": errors}


def group_consumer(settings: ConsumerSettings, errors: ErrorReport) -> Consumer:
    """The member's consumer: offsets from the store (Kafka's are for lag monitoring only)."""
    return Consumer(
        {
            **_base(settings, errors),
            "group.id": settings.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "roundrobin",
            "enable.partition.eof": False,
            # prefetch enough to keep the fold busy, but bounded: this memory counts too
            # (librdkafka's defaults hold far more fetched records than the fold needs).
            # Each fetch response stays in memory, decompressed, while any of its records
            # is queued: a smaller response holds less (bench/results/consumer.md)
            "fetch.max.bytes": 2 * 1024 * 1024,
            "queued.max.messages.kbytes": 4 * 1024,
            "queued.min.messages": 20_000,
            # ... and refilled at once: once the queue is full librdkafka waits this long
            # before the next fetch (default 1000 ms), which starved the fold of records
            # (bench/results/history.md has the measurement)
            "fetch.queue.backoff.ms": 10,
        }
    )


def dlq_producer(settings: ConsumerSettings, errors: ErrorReport) -> Producer:
    """The dead-letter topic's producer: idempotent, every record acknowledged by all replicas."""
    return Producer({**_base(settings, errors), "acks": "all", "enable.idempotence": True, "linger.ms": 5})


#: seconds a lag refresh waits for the broker's watermarks of a partition not fetched from yet
WATERMARK_TIMEOUT = 0.5


def lag_of(
    consumer: Consumer, topic: str, positions: MutableMapping[int, int], assigned: Iterable[int]
) -> dict[int, int]:
    """Records behind the high watermark per assigned partition, from `positions` (the next
    offset to process). The client's cached watermarks serve once a partition has been
    fetched from (no broker round trip). Before that the broker is asked, as it is for the
    low watermark of a partition without a position (no record processed yet: it starts
    there), which is then kept in `positions` (an empty partition is not asked again). Each
    call waits at most `WATERMARK_TIMEOUT`; after one unanswered, the broker is not asked
    again in this refresh, and a partition that needed it is left out. (A fresh consumer's
    lag had left out every partition not reached yet.)"""
    lag: dict[int, int] = {}
    ask = True
    for p in assigned:
        tp, pos = TopicPartition(topic, p), positions.get(p)
        try:
            low, high = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            low, high = -1, -1
        if (high < 0 or pos is None) and ask:
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=WATERMARK_TIMEOUT, cached=False)
            except KafkaException:
                ask = False  # the broker is not answering: not again in this refresh
                continue
        if pos is None and low >= 0:
            pos = positions[p] = low
        if high >= 0 and pos is not None:
            lag[p] = max(0, high - pos)
    return lag


def ensure_topic(
    bootstrap: str,
    topic: str,
    *,
    what: str,
    partitions: int = -1,
    compacted: bool = False,
    kafka: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> None:
    """Create `topic` unless it exists (`schemas.kafka.create_topic`: the broker's defaults
    but for `partitions`), naming it `what` when it cannot be made."""
    try:
        create_topic(
            bootstrap, topic, what=what, partitions=partitions,
            config={"cleanup.policy": "compact"} if compacted else None, kafka=kafka, timeout=timeout,
        )  # fmt: skip
    except TopicNotMadeError as exc:
        raise (KafkaUnavailableError if exc.unreachable else ConsumerError)(str(exc)) from None


def group_offsets(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """The group's committed offsets of these partitions in Kafka (those that have one):
    none when the coordinator does not answer within a few seconds (the caller's check,
    `partitions.ahead_of_the_store`, is advice, and runs inside a rebalance callback)."""
    if not partitions:
        return {}
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=5)
    except KafkaException as exc:
        log.debug("the group's committed offsets not read: %s", exc)
        return {}
    return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}
