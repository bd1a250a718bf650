"""One frozen settings object per consumer process, from flags and environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consumer.fold.registry import DEFAULT_METRIC_SET, DEFAULT_SLA_BUCKETS, Registry, metric_set
from consumer.store import Retention
from consumer.stream.watchdog import STALL_S
from schemas.confluent import WireFormat
from schemas.schema_registry import RegistrySettings

#: records per commit while behind, by metric set, where `--flush-events` is not given.
#: Much of a SQLite commit's cost is per commit, not per event (the pages of the account
#: rows and of the closures' account-keyed B-trees it touches, about one per active account
#: whatever the commit's size), so bigger commits cost less per event. The full set is
#: bound by its rows per event instead, and its bigger commits cost memory: 35,000 against
#: 50,000 peaked at 397 and 388 MB against 409 and 408, for 8-12% of its events/s
#: (2026-12-07, alternating; docs/performance.md, "Commit size").
FLUSH_EVENTS: Mapping[str, int] = {"closures": 100_000, "full": 35_000}


@dataclass(frozen=True)
class ConsumerSettings:
    bootstrap_servers: str
    topic: str = "conversation-events"
    group: str = "closure-metrics"
    store_url: str = "sqlite:///convmetrics.db"
    #: commit to the store after this many events or seconds, whichever comes first;
    #: None: the metric set's (`FLUSH_EVENTS`, read as `commit_events`)
    flush_events: int | None = None
    #: when caught up: a short interval keeps webhook-to-API latency low (p99 < 1 s)
    flush_interval: float = 0.25
    #: while behind (polls return full batches): fewer, bigger commits catch up faster
    backlog_flush_interval: float = 2.0
    poll_batch: int = 10_000
    #: event ids remembered per conversation (the dedupe memory lives with the conversation)
    dedupe_per_conversation: int = 256
    #: forget a conversation (its state and its event ids) after this much idle event time
    conversation_ttl: int = 30 * 86400
    #: and beyond this many conversations per partition, forget the longest idle first
    max_conversations: int | None = 5_000_000
    retention: Retention = field(default_factory=Retention)
    http_port: int | None = None
    http_host: str = "127.0.0.1"
    #: librdkafka settings of every client (security, tuning): `schemas.kafka`
    kafka: Mapping[str, str] = field(default_factory=dict)
    #: the metrics and groupings folded (`consumer.fold.registry.METRIC_SETS`)
    metric_set: str = DEFAULT_METRIC_SET
    #: time_to_close's SLA bucket bounds (`--sla-buckets`), where the metric set has them
    sla_buckets: str = DEFAULT_SLA_BUCKETS
    #: note this set as the store's where it notes another (`consumer.store.folded_set`),
    #: instead of refusing to start
    switch_metric_set: bool = False
    #: where Confluent-framed records' schema ids are looked up (once per id); None: such
    #: records are dead-lettered, saying so
    schema_registry: RegistrySettings | None = None
    #: how the metrics-topic publishers frame their records
    wire_format: WireFormat = WireFormat.SINGLE_OBJECT
    #: seconds without progress after which the consumer counts as stalled (`/healthz` 503)
    stall_timeout: float = STALL_S

    @property
    def commit_events(self) -> int:
        """Records per commit while behind: `flush_events`, else the metric set's."""
        return self.flush_events if self.flush_events is not None else FLUSH_EVENTS[self.metric_set]

    @property
    def registry(self) -> Registry:
        return metric_set(self.metric_set, self.sla_buckets)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"
