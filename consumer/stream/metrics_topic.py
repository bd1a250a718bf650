"""Changed metric rows, published to a compacted Kafka topic for pipelines.

After each durable commit the consumer publishes every row its partitions changed since
their last publication (the store keeps, per row and partition, the partition's offset
after the commit that last changed it: an outbox), then records how far it got; a member
given a partition publishes what is pending there at once. A crash between the two
republishes some rows: harmless, since the topic has upsert semantics
(compacted; key = grouping|key|window|window_start; the latest value per key is the
current one).

Two value formats, each its own subject and topic:
- `metric_rows` (`--metric-rows-topic`, default `conversation-metric-rows`): generic over
  the registry (maps of counters and distributions keyed by metric name), so a metric
  added to the registry needs no new schema version; the live gauges (full set) go out
  as records of the window `live` (key grouping|key|live|), their 0 included;
- `closure_metrics` (`--metrics-topic`, default `conversation-closure-metrics`): the
  earlier fixed record, kept for the readers that have it; it carries the metrics it was
  made with and no others.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaException, Producer

from consumer.exceptions import ConfigError, ConsumerError
from consumer.fold.registry import CLOSURES, Kind, Registry
from consumer.store import LIVE, MetricRow, Store
from consumer.store.render import row_json
from consumer.stream.clients import ensure_topic
from schemas import subject
from schemas.confluent import WireFormat
from schemas.exceptions import RegistryError, RegistryUnavailableError, SchemaError
from schemas.kafka import DeliveryErrors, client_config
from schemas.schema_registry import DEFAULT_TOPICS, RegistrySettings, writer_codec
from schemas.topic_registry import SCHEMA_TOPIC, publish_schemas

METRICS_TOPIC = DEFAULT_TOPICS["closure_metrics"]
METRIC_ROWS_TOPIC = DEFAULT_TOPICS["metric_rows"]
log = logging.getLogger(__name__)
#: seconds Kafka has to acknowledge a commit's rows (else the consumer stops with an error)
PUBLISH_TIMEOUT_S: Final = 30.0
#: seconds more once the consumer stops: then the rows wait in the store instead
STOPPING_TIMEOUT_S: Final = 5.0
FLUSH_SLICE_S: Final = 0.25
#: Test-only hook (tests/integration/test_metrics_topic.py), inert unless set to a number N:
#: a publication pass that has produced N records with more to go has Kafka acknowledge
#: those N, then SIGKILLs this process before the pass's mark moves: a crash certainly in
#: the middle of a publication.
KILL_MID_PUBLICATION_ENV: Final = "CONVMETRICS_TEST_KILL_MID_PUBLICATION"


def metrics_key(row: MetricRow) -> str:
    return topic_key(row.by, row.key, row.window, row.window_start)


def topic_key(by: str, key: str, window: str, start: int | None) -> str:
    """A row's record key on the metrics topics: `grouping|key|window|start` (no start for
    the all-time and live rows)."""
    return f"{by}|{key}|{window}|{'' if window in ('all', LIVE) else start}"


def metric_rows_record(row: MetricRow, registry: Registry, now_ms: int) -> dict[str, Any]:
    """A row as a `metric_rows` record (v3): every counter and distribution by metric name,
    a distribution's SLA buckets with it; a gauge row (window LIVE) its gauges by name."""
    dims = registry.grouping(row.by).dimensions
    values = registry.key_parts(row.by, row.key)
    if row.window == LIVE:
        return {
            "grouping": row.by,
            "key": dict(zip(dims, values, strict=True)),
            "window": LIVE,
            "windowStart": None,
            "windowEnd": None,
            "counters": {},
            "distributions": {},
            "publishedAtMillis": now_ms,
            "gauges": {g.name: row.values[g.column] for g in registry.gauges},
        }
    j = row_json(row, registry)
    # the metrics that count in this grouping and window, as /v1/metrics shows them (the
    # ingest lag counts by channel type in 1h, 1d and all time only)
    counted = [m for m in registry.metrics if m.counts_in(row.by, row.window)]
    distributions = {}
    for m in (m for m in counted if m.kind is Kind.DISTRIBUTION):
        d = j[m.name]
        distributions[m.name] = {
            "count": d["count"],
            **{f: None if d.get(f) is None else float(d[f]) for f in _STATS},
            "buckets": d.get("buckets"),  # v2: time to close's SLA buckets (full set)
        }
    return {
        "grouping": row.by,
        "key": dict(zip(dims, values, strict=True)),
        "window": row.window,
        "windowStart": j["window_start"],
        "windowEnd": j["window_end"],
        "counters": {m.name: j[m.name] for m in counted if m.kind is Kind.COUNTER},
        "distributions": distributions,
        "publishedAtMillis": now_ms,
        "gauges": {},
    }


_STATS = ("sum", "min", "max", "mean", "p50", "p90", "p99")


#: the groupings a `closure_metrics` v1 record can carry (its `by`): the others are
#: published as `metric_rows` records only
V1_GROUPINGS: Final = tuple(g.name for g in CLOSURES.groupings)


def metrics_record(row: MetricRow, registry: Registry, now_ms: int) -> dict[str, Any]:
    """A row as a `closure_metrics` v1 record (the metrics that record names); only for the
    rows `FORMATS["closure_metrics"].carries`."""
    j = row_json(row, registry)
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


@dataclass(frozen=True)
class Format:
    """A value subject's records: which rows (grouping, window) it carries, and how a row
    becomes one. Rows it does not carry are never published there, nor their tombstones."""

    record: Callable[[MetricRow, Registry, int], dict[str, Any]]
    carries: Callable[[str, str], bool]


#: value subject -> its records
FORMATS: Final[dict[str, Format]] = {
    "metric_rows": Format(metric_rows_record, lambda by, window: True),
    "closure_metrics": Format(metrics_record, lambda by, window: by in V1_GROUPINGS and window != LIVE),
}


class MetricsTopicPublisher:
    """Call `publish_pending(store, partitions)` after each commit, on the thread that owns
    the store. `value_subject`: metric_rows (generic) or closure_metrics (the earlier record)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = METRICS_TOPIC,
        *,
        kafka: Mapping[str, str] | None = None,
        value_subject: str = "closure_metrics",
        wire_format: WireFormat = WireFormat.SINGLE_OBJECT,
        registry: RegistrySettings | None = None,
    ) -> None:
        self.topic = topic
        self.subject = value_subject
        self.format = FORMATS[value_subject]
        try:  # Confluent: the schema id, looked up once, now
            self.codec = writer_codec(subject(value_subject), topic, wire_format, registry)
        except RegistryUnavailableError:
            raise
        except RegistryError as exc:
            raise ConfigError(f"metrics topic {topic}: {exc}") from None
        ensure_topic(
            bootstrap, topic, what="the metrics topic", partitions=6, compacted=True, kafka=kafka, timeout=10
        )
        if wire_format is WireFormat.SINGLE_OBJECT:
            _publish_schemas(bootstrap, value_subject, kafka)
        self.producer = Producer(
            client_config(
                bootstrap,
                kafka,
                tuning={"linger_ms": 20, "compression_type": "lz4"},
                acks="all",
                enable_idempotence=True,
            )
        )
        self.published = 0
        self._refused = DeliveryErrors()  # this pass's
        self._kill_after = _kill_mid_publication_after()  # None: the hook is off

    def publish_pending(
        self,
        store: Store,
        partitions: list[int],
        *,
        stopping: threading.Event | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> int:
        """Publish the rows these partitions changed since their last publication (each
        consumer publishes its own partitions: no two write the same marks); returns the
        number of rows.

        Kafka must acknowledge them within PUBLISH_TIMEOUT_S, else a ConsumerError. Once
        the consumer stops (`stopping` is set, before or during the wait), it waits at most
        STOPPING_TIMEOUT_S more and then drops what is unacknowledged with a warning: those
        rows stay unpublished in the store (their marks do not move) and go out after the
        partition's next commit here, or when its next owner is assigned it. A consumer whose
        brokers went away with it (a killed demo, a lost cluster) so stops in seconds.
        `beat(doing)` at each batch of commits' rows (`consumer.stream.watchdog`).
        """
        total = 0
        while True:
            if beat is not None:
                beat(f"publishing the changed rows of partitions {partitions} to {self.topic}")
            marks = store.published_marks(partitions, self.topic)
            rows, newest = store.changed_since(marks)
            if not rows:
                return total + self._tombstones(store, stopping)
            now_ms = time.time_ns() // 1_000_000
            headers: list[tuple[str, str | bytes | None]] = list(self.codec.headers(self.subject))
            produced = 0
            self._refused.errors.clear()
            for row in rows:
                if not self.format.carries(row.by, row.window):
                    continue
                record = self.format.record(row, store.registry, now_ms)
                if produced == self._kill_after:  # never while the test-only hook is off
                    self._kill_mid_publication(produced, len(rows))
                produced += 1
                self.producer.produce(
                    self.topic,
                    key=metrics_key(row),
                    value=self.codec.encode(record),
                    headers=headers,
                    on_delivery=self._refused,
                )
                self.producer.poll(0)
            if left := self._flush(stopping):
                if stopping is not None and stopping.is_set():
                    self.producer.purge()
                    self.producer.flush(0)  # serves the purged records' reports
                    log.warning(
                        "metrics topic %s: %d of %d rows not acknowledged while stopping; they "
                        "stay unpublished in the store and go out after the partitions' next commit",
                        self.topic,
                        left,
                        len(rows),
                    )
                    return total
                raise ConsumerError(f"metrics topic {self.topic} did not acknowledge {len(rows)} rows")
            self._check_delivered("rows")
            store.mark_published(newest, self.topic)
            total += len(rows)
            self.published += len(rows)

    def _tombstones(self, store: Store, stopping: threading.Event | None) -> int:
        """A tombstone (the key, no value) for each row purged past retention that this topic
        has published or may have: compacted, the topic then forgets it, as the store did.
        Several consumers may send the same ones (PostgreSQL): a tombstone twice is one."""
        total = 0
        while True:
            keys, mark = store.purged_since(self.topic)
            if not keys:
                return total
            self._refused.errors.clear()
            for by, win, start, key in keys:
                if not self.format.carries(by, win):
                    continue  # never published here
                tombstone = topic_key(by, key, win, start)
                self.producer.produce(self.topic, key=tombstone, value=None, on_delivery=self._refused)
                self.producer.poll(0)
            if left := self._flush(stopping):
                if stopping is not None and stopping.is_set():  # as rows are: sent again later
                    self.producer.purge()
                    self.producer.flush(0)
                    return total
                raise ConsumerError(f"metrics topic {self.topic} did not acknowledge {left} tombstones")
            self._check_delivered("tombstones")
            store.mark_purged_published(self.topic, mark)
            total += len(keys)

    def _check_delivered(self, what: str) -> None:
        """After a flush that left nothing unacknowledged: a ConsumerError if Kafka refused
        any of the pass's records (its marks do not move: nothing is lost, it is said)."""
        if refused := self._refused.errors:
            raise ConsumerError(
                f"metrics topic {self.topic} refused {len(refused)} {what} ({refused[0]}); "
                "they stay unpublished in the store"
            )

    def _kill_mid_publication(self, produced: int, rows: int) -> None:
        """The test-only hook (KILL_MID_PUBLICATION_ENV): these rows on the broker, the
        rest not, the mark not moved, the process gone."""
        self.producer.flush(PUBLISH_TIMEOUT_S)
        log.warning(
            "%s: killing this process after %d records, before the next of this pass's %d rows",
            KILL_MID_PUBLICATION_ENV,
            produced,
            rows,
        )
        os.kill(os.getpid(), signal.SIGKILL)

    def _flush(self, stopping: threading.Event | None) -> int:
        """Wait for Kafka's acknowledgements (in slices, to notice a stop); the number of
        records still unacknowledged at the deadline."""
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        stopped_at: float | None = None
        while left := self.producer.flush(FLUSH_SLICE_S):
            now = time.monotonic()
            if stopped_at is None and stopping is not None and stopping.is_set():
                stopped_at = now
                deadline = min(deadline, now + STOPPING_TIMEOUT_S)
            if now >= deadline:
                return int(left)
        return 0


def _publish_schemas(bootstrap: str, value_subject: str, kafka: Mapping[str, str] | None) -> None:
    """Every shipped version of the topic's value subject to the schema topic, as the gateway
    does the events': a reader older than this build resolves the records' fingerprints
    from Kafka. Not a reason to stop (the schemas ship with every build): a warning."""
    try:
        publish_schemas(bootstrap, subject(value_subject), kafka=kafka, timeout=10)
    except (SchemaError, KafkaException) as exc:
        log.warning(
            "the %s schemas are not in the schema topic %s: %s; readers of the metrics topic "
            "that lack them cannot resolve its records from Kafka",
            value_subject,
            SCHEMA_TOPIC,
            exc,
        )


def _kill_mid_publication_after() -> int | None:
    """The test-only hook's row count (KILL_MID_PUBLICATION_ENV), None when it is unset."""
    value = os.environ.get(KILL_MID_PUBLICATION_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{KILL_MID_PUBLICATION_ENV}={value!r}: give a number of rows >= 1, or unset it")
    return int(value)
