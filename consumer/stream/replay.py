"""`convmetrics dlq replay`: dead-lettered records back to their source topic."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from consumer.exceptions import ConfigError, ConsumerError
from consumer.stream.dlq import original_headers, source_of
from schemas import codec, confluent
from schemas.confluent import WireFormat
from schemas.exceptions import RegistryError
from schemas.kafka import client_config, close_consumer, unreachable
from schemas.registry import SchemaVersion, subject, subject_names
from schemas.schema_registry import RegistryClient, RegistrySettings


class Reframer:
    """`dlq replay --wire-format confluent`: a single-object record of a shipped version gets
    the Confluent head (its id under `<topic>-value`, looked up once per topic and version);
    the body stays. Confluent records, and records this build cannot place, go back as
    they came (the consumer reads both framings)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._versions: dict[bytes, SchemaVersion] = {
            v.fingerprint: v for name in subject_names() for v in subject(name).versions
        }
        self._ids: dict[tuple[str, bytes], int] = {}

    def __call__(
        self, topic: str, value: bytes, headers: list[tuple[str, Any]]
    ) -> tuple[bytes, list[tuple[str, Any]]]:
        if not value.startswith(codec.MAGIC) or len(value) < codec.HEADER_SIZE:
            return value, headers
        fp = value[2 : codec.HEADER_SIZE]
        version = self._versions.get(fp)
        if version is None:
            return value, headers
        schema_id = self._ids.get((topic, fp))
        if schema_id is None:
            schema_id = self._ids[(topic, fp)] = self.client.schema_id(topic, version)
        headers = [(k, confluent.CONTENT_TYPE if k == codec.HEADER_CONTENT_TYPE else v) for k, v in headers]
        return confluent.frame(schema_id, value[codec.HEADER_SIZE :]), headers


def replay_dead_letters(
    bootstrap: str,
    topic: str,
    *,
    group: str,
    idle_timeout: float = 5.0,
    kafka: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
    wire_format: WireFormat = WireFormat.SINGLE_OBJECT,
    registry: RegistrySettings | None = None,
) -> tuple[int, int]:
    """Replay `<topic>.dlq` into the source topics; returns (replayed, skipped).

    Progress is the replay group's committed offset, committed only after the producer
    acknowledged everything before it, so an interrupted replay resumes without loss.
    With the Confluent `wire_format`, single-object records are reframed (`Reframer`).
    """
    reframe = None
    if wire_format is WireFormat.CONFLUENT:
        if registry is None:
            raise ConfigError("--wire-format confluent needs --schema-registry-url (or its variable)")
        try:
            reframe = Reframer(RegistryClient(registry))
        except RegistryError as exc:
            raise ConfigError(str(exc)) from None
    consumer = Consumer(
        client_config(
            bootstrap, kafka, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
    )
    replayed = skipped = 0
    try:
        try:  # a one-shot command: an unreachable cluster is an error, not "0 replayed"
            consumer.list_topics(timeout=connect_timeout)
        except KafkaException as exc:
            raise ConsumerError(unreachable(bootstrap, connect_timeout, exc)) from None
        # made only now: a producer made before the check would still be logging its own
        # connection failures after the error line above
        producer = Producer(client_config(bootstrap, kafka, acks="all", enable_idempotence=True))
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
                value, headers = m.value() or b"", original_headers(m.headers())
                if reframe is not None:
                    value, headers = reframe(src[0], value, headers)
                producer.produce(src[0], key=m.key(), value=value, headers=headers)
                replayed += 1
            if producer.flush(30):
                raise ConsumerError(
                    "the source topic did not acknowledge replayed records; nothing committed"
                )
            consumer.commit(asynchronous=False)
    finally:
        close_consumer(consumer)
    return replayed, skipped
