"""`convmetrics dlq replay`: dead-lettered records back to their source topic."""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, Producer

from consumer.exceptions import ConsumerError
from consumer.stream.dlq import original_headers, source_of
from schemas.kafka import client_config


def replay_dead_letters(
    bootstrap: str,
    topic: str,
    *,
    group: str,
    idle_timeout: float = 5.0,
    kafka: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
) -> tuple[int, int]:
    """Replay `<topic>.dlq` into the source topics; returns (replayed, skipped).

    Progress is the replay group's committed offset, committed only after the producer
    acknowledged everything before it, so an interrupted replay resumes without loss.
    """
    consumer = Consumer(
        client_config(
            bootstrap, kafka, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
    )
    producer = Producer(client_config(bootstrap, kafka, acks="all", enable_idempotence=True))
    replayed = skipped = 0
    try:
        try:  # a one-shot command: an unreachable cluster is an error, not "0 replayed"
            consumer.list_topics(timeout=connect_timeout)
        except KafkaException as exc:
            raise ConsumerError(
                f"Kafka at {bootstrap} did not answer within {connect_timeout:g} s: {exc.args[0].str()}"
            ) from None
        consumer.subscribe([f"{topic}.dlq"])
        last_seen = time.monotonic()
        while time.monotonic() - last_seen < idle_timeout:
            msgs = consumer.consume(1000, 0.5)
            if not msgs:
                continue
            last_seen = time.monotonic()
            for m in msgs:
                if m.error():
                    continue
                src = source_of(m.headers())
                if src is None:
                    skipped += 1
                    continue
                producer.produce(src[0], key=m.key(), value=m.value(), headers=original_headers(m.headers()))
                replayed += 1
            if producer.flush(30):
                raise ConsumerError(
                    "the source topic did not acknowledge replayed records; nothing committed"
                )
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return replayed, skipped
