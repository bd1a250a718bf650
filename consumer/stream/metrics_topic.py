"""Changed metric rows, published to a compacted Kafka topic for pipelines.

After each durable commit the consumer publishes every row changed since the last
publication (the store keeps the commit sequence of each row: an outbox), then records
how far it got. A crash between the two republishes some rows: harmless, since the topic
has upsert semantics (compacted; key = by|key|window|window_start; the latest value per
key is the current one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.exceptions import ConsumerError
from consumer.store import MetricRow, Store
from consumer.store.render import row_json
from schemas import Codec, subject

METRICS_TOPIC = "conversation-closure-metrics"
log = logging.getLogger(__name__)


def metrics_key(row: MetricRow) -> str:
    start = "" if row.window == "all" else str(row.window_start)
    return f"{row.by}|{row.key}|{row.window}|{start}"


def metrics_record(row: MetricRow, now_ms: int) -> dict[str, Any]:
    j = row_json(row)
    return {
        "by": row.by,
        "key": row.key,
        "window": row.window,
        "windowStart": j["window_start"],
        "windowEnd": j["window_end"],
        "closures": j["closures"],
        "reopens": j["reopens"],
        "closedUnread": j["closed_unread"],
        "timeToClose": j["time_to_close"],
        "ingestLag": j["ingest_lag"],
        "publishedAtMillis": now_ms,
    }


def ensure_compacted_topic(bootstrap: str, topic: str, partitions: int = 6, timeout: float = 30) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    future = admin.create_topics([NewTopic(topic, partitions, 1, config={"cleanup.policy": "compact"})])[
        topic
    ]
    try:
        future.result(timeout)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise ConsumerError(f"cannot create the metrics topic {topic}: {exc}") from exc


class MetricsTopicPublisher:
    """Call `publish_pending(store, partitions)` after each commit, on the thread that owns
    the store."""

    def __init__(
        self, bootstrap: str, topic: str = METRICS_TOPIC, *, kafka: dict[str, str] | None = None
    ) -> None:
        self.topic = topic
        ensure_compacted_topic(bootstrap, topic)
        self.codec = Codec(subject("closure_metrics"))
        self.producer = Producer({
            "bootstrap.servers": bootstrap, **(kafka or {}), "acks": "all", "enable.idempotence": True,
            "linger.ms": 20, "compression.type": "lz4",
        })  # fmt: skip
        self.published = 0

    def publish_pending(self, store: Store, partitions: list[int], *, timeout: float = 30) -> int:
        """Publish the rows these partitions changed since their last publication (each
        consumer publishes its own partitions: no two write the same marks); returns the
        number of rows."""
        total = 0
        while True:
            marks = store.published_marks(partitions)
            rows, newest = store.changed_since(marks)
            if not rows:
                return total
            now_ms = time.time_ns() // 1_000_000
            headers: list[tuple[str, str | bytes | None]] = list(self.codec.headers("closure_metrics"))
            for row in rows:
                self.producer.produce(
                    self.topic,
                    key=metrics_key(row),
                    value=self.codec.encode(metrics_record(row, now_ms)),
                    headers=headers,
                )
                self.producer.poll(0)
            if self.producer.flush(timeout):
                raise ConsumerError(f"metrics topic {self.topic} did not acknowledge {len(rows)} rows")
            store.mark_published(newest)
            total += len(rows)
            self.published += len(rows)

    def close(self) -> None:
        self.producer.flush(10)
