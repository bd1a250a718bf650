"""Create the events topic at start when it is missing (blocking admin calls)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from producer.exceptions import TopicError
from schemas.exceptions import TopicNotMadeError
from schemas.kafka import create_topic

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
    try:
        made = create_topic(
            bootstrap_servers, topic, what="the events topic", partitions=partitions,
            replication_factor=replication_factor, kafka=kafka, timeout=timeout,
        )  # fmt: skip
    except TopicNotMadeError as exc:
        raise TopicError(str(exc)) from None
    if made:
        log.info("created topic %s (%d partitions, replication %d)", topic, partitions, replication_factor)
    return made
