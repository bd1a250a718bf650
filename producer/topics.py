"""The events topic at start: created when missing, and refused when its events are keyed
otherwise than this producer keys them (blocking Kafka calls)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from producer.exceptions import KeyMismatchError, TopicError
from producer.mapping import KeyBy, key_shape
from schemas.exceptions import TopicNotMadeError
from schemas.kafka import client_config, create_topic, unreachable

log = logging.getLogger(__name__)

#: what a partition answers while its leader is not yet elected (a topic created a moment
#: ago, a broker restarting): asked again until the check's time is up
_SETTLING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    partitions: int,
    replication_factor: int | None,
    timeout: float = 30.0,
    kafka: Mapping[str, str] | None = None,
) -> bool:
    """Create ``topic`` unless it exists (``replication_factor`` None: the broker's
    default.replication.factor). Returns True when this call created it.

    Raises:
        TopicError: the cluster did not answer in ``timeout`` or refused the topic.
    """
    try:
        made = create_topic(
            bootstrap_servers, topic, what="the events topic", partitions=partitions,
            replication_factor=-1 if replication_factor is None else replication_factor,
            kafka=kafka, timeout=timeout,
        )  # fmt: skip
    except TopicNotMadeError as exc:
        raise TopicError(str(exc)) from None
    if made:
        replication = "the broker's default" if replication_factor is None else replication_factor
        log.info("created topic %s (%d partitions, replication %s)", topic, partitions, replication)
    return made


def check_key(
    bootstrap_servers: str,
    topic: str,
    key_by: KeyBy,
    *,
    timeout: float = 10.0,
    kafka: Mapping[str, str] | None = None,
) -> None:
    """Read the newest record of each partition of ``topic`` and refuse the topic if one was
    keyed otherwise than ``key_by``: the fold keeps a conversation on the partition its
    events arrive on, so a change of key on a topic that holds events would split open
    conversations between two partitions. An empty (or missing) topic passes.

    Raises:
        KeyMismatchError: a partition's newest record has the other key.
        TopicError: the cluster did not answer in ``timeout``.
    """
    consumer = Consumer(
        client_config(
            bootstrap_servers, kafka, group_id="convmetrics-key-check", enable_auto_commit=False,
            enable_partition_eof=True,  # a partition read to its end (past a transaction marker) says so
        ),
        logger=log,  # librdkafka's lines through logging: an unreachable cluster is one error, raised
    )  # fmt: skip
    try:
        for partition, key in _newest_keys(consumer, topic, timeout):
            shape = key_shape(key)
            if shape is not None and shape != key_by:
                raise KeyMismatchError(
                    f"topic {topic} holds events keyed by {shape} (partition {partition}'s newest "
                    f"key is {(key or b'').decode(errors='replace')!r}) and this producer keys them "
                    f"by {key_by}: a conversation's events would be split between partitions. Run "
                    f"with --key-by {shape} (CONVMETRICS_KEY_BY={shape}), or produce to a new topic "
                    '(docs/operations.md, "Why the account")',
                    found=shape,
                )
    except KafkaException as exc:
        raise TopicError(unreachable(bootstrap_servers, timeout, exc)) from None
    finally:
        consumer.close()


def _newest_keys(consumer: Consumer, topic: str, timeout: float) -> list[tuple[int, bytes | None]]:
    """(partition, key) of each partition's newest record, where there is one to read."""
    deadline = time.monotonic() + timeout
    found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None:
        return []
    newest = []
    for p in sorted(found.partitions):
        low, high = _watermarks(consumer, TopicPartition(topic, p), deadline)
        if high > low:
            newest.append(TopicPartition(topic, p, high - 1))
    consumer.assign(newest)
    keys: list[tuple[int, bytes | None]] = []
    left, deadline = {tp.partition for tp in newest}, time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for m in consumer.consume(len(left), 0.5):
            err, partition = m.error(), m.partition()
            if partition not in left or (err is not None and err.code() != KafkaError._PARTITION_EOF):
                continue
            left.discard(partition)
            if err is None:  # else its newest offset was a transaction marker: nothing to read
                keys.append((partition, m.key()))
    return keys


def _watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """A partition's (low, high) offsets, asked again while its leader settles (a topic made a
    moment ago answers "not leader" for a while) until ``deadline``."""
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(deadline - time.monotonic(), 0.5))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError) or err.code() not in _SETTLING or time.monotonic() >= deadline:
                raise
        time.sleep(0.1)
