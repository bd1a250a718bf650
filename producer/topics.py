"""Create the events topic at start when it is missing (blocking admin calls)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from producer.exceptions import TopicError
from schemas.kafka import client_config, unreachable

log = logging.getLogger(__name__)


def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    partitions: int,
    replication_factor: int,
    timeout: float = 30.0,
    kafka: Mapping[str, str] | None = None,
) -> bool:
    """Create ``topic`` unless it exists. Returns True when this call created it.

    Raises:
        TopicError: the cluster did not answer in ``timeout`` or refused the topic.
    """
    admin = AdminClient(client_config(bootstrap_servers, kafka))
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(unreachable(bootstrap_servers, timeout, exc)) from None
    if topic in meta.topics and meta.topics[topic].error is None:
        return False
    future = admin.create_topics([NewTopic(topic, partitions, replication_factor)])[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: another gateway won
            return False
        raise TopicError(f"could not create topic {topic!r} on {bootstrap_servers}: {exc}") from None
    except FutureTimeout:
        raise TopicError(f"creating topic {topic!r} took longer than {timeout:g} s") from None
    log.info("created topic %s (%d partitions, replication %d)", topic, partitions, replication_factor)
    return True
