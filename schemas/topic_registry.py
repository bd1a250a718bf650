"""Writer schemas published to a compacted Kafka topic, for readers older than the writer.

The shipped `schemas/` folder is the registry of this build. A record from a newer
producer carries a fingerprint this build lacks; the gateway therefore publishes every
schema it ships (key `<subject>:<fingerprint>`, value the schema JSON) to
`_convmetrics-schemas` at start (the consumer's metrics-topic publishers theirs), and
readers look unknown fingerprints up there. Values
are trusted only when their own fingerprint matches the key's.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from schemas.exceptions import SchemaError
from schemas.kafka import DeliveryErrors, client_config, create_topic
from schemas.registry import Subject

SCHEMA_TOPIC = "_convmetrics-schemas"
log = logging.getLogger(__name__)


def publish_schemas(
    bootstrap: str,
    subject: Subject,
    *,
    topic: str = SCHEMA_TOPIC,
    timeout: float = 30,
    kafka: Mapping[str, str] | None = None,
) -> None:
    """Create the compacted schema topic if missing and put every shipped version in it."""
    # the broker's replication factor: a cluster with min.insync.replicas above 1 refuses
    # acks=all writes to a topic of one replica (and a secured one its creation)
    create_topic(
        bootstrap, topic, what="the schema topic", partitions=1,
        config={"cleanup.policy": "compact"}, kafka=kafka, timeout=timeout,
    )  # fmt: skip
    producer = Producer(client_config(bootstrap, kafka, acks="all", enable_idempotence=True))
    refused = DeliveryErrors()  # a delivery error is no acknowledgement
    for v in subject.versions:
        key = f"{subject.name}:{v.fingerprint_hex}"
        producer.produce(topic, key=key, value=json.dumps(v.raw), on_delivery=refused)
    if producer.flush(timeout):
        raise SchemaError(f"schema topic {topic} did not acknowledge the schemas of {subject.name}")
    if refused.errors:
        raise SchemaError(f"schema topic {topic} refused the schemas of {subject.name}: {refused.errors[0]}")


class TopicSchemaResolver:
    """`Codec(resolve_unknown=...)`: reads the whole schema topic on a miss, caches it."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = SCHEMA_TOPIC,
        timeout: float = 10,
        kafka: Mapping[str, str] | None = None,
    ) -> None:
        self.bootstrap, self.topic, self.timeout, self.kafka = bootstrap, topic, timeout, kafka
        self._cache: dict[bytes, Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, fp: bytes) -> Mapping[str, Any] | None:
        with self._lock:
            if fp not in self._cache:
                self._refresh()
            return self._cache.get(fp)

    def _refresh(self) -> None:
        c = Consumer(
            client_config(
                self.bootstrap, self.kafka, group_id=f"schema-reader-{uuid.uuid4()}", enable_auto_commit=False
            )
        )
        try:
            meta = c.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
            if meta is None or meta.error is not None:
                return
            ends = {}
            for p in meta.partitions:
                low, high = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=self.timeout)
                if high > low:
                    ends[p] = high
            c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            while ends:
                m = c.poll(self.timeout)
                if m is None:
                    break
                if m.error() is not None:
                    continue
                key = (m.key() or b"").decode(errors="replace")
                try:
                    self._cache[bytes.fromhex(key.rsplit(":", 1)[-1])] = json.loads(m.value() or b"null")
                except ValueError:
                    log.warning("ignoring a malformed record in %s: key %r", self.topic, key)
                part, off = m.partition() or 0, m.offset()
                if off is not None and off + 1 >= ends.get(part, 0):
                    ends.pop(part, None)
        except KafkaException as exc:
            log.warning("cannot read schema topic %s: %s", self.topic, exc)
        finally:
            c.close()
