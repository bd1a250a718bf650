"""Prometheus metrics of one consumer process: events by type, duplicates, dead letters,
lag, flush and store-transaction durations, fenced partitions. Counters are read from the
consumer's `Stats` at scrape time; durations are observed by its commit hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from consumer.stream.checkpoint import CommitReport
    from consumer.stream.partitions import Stats

#: Commits take milliseconds to a few seconds (a 50,000-event flush on a slow disk).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StatsCollector(Collector):
    def __init__(self, stats: Callable[[], Stats | None], idle: Callable[[], float | None]) -> None:
        self._stats = stats
        self._idle = idle

    def collect(self) -> Iterable[Metric]:
        st = self._stats()
        if st is None:
            return
        if (idle := self._idle()) is not None:
            yield GaugeMetricFamily(
                "convmetrics_consumer_progress_age_seconds",
                "Seconds since the polling loop or the store writer last made progress "
                "(past --stall-timeout the consumer is stalled: /healthz answers 503).",
                value=idle,
            )
        by_type = dict(st.by_type)  # copied: the polling thread keeps adding to it
        lag = st.lag  # replaced whole by the polling thread, never changed in place
        yield _counter("convmetrics_consumer_records", "Records consumed (all outcomes).", st.consumed)
        events = CounterMetricFamily(
            "convmetrics_consumer_events",
            "Events folded into the metrics, by event type (duplicates not included).",
            labels=["type"],
        )
        for name in sorted(by_type):
            events.add_metric([name], by_type[name])
        yield events
        yield _counter("convmetrics_consumer_duplicates", "Events dropped as already counted.", st.duplicates)
        yield _counter(
            "convmetrics_consumer_ignored", "Records that are not conversation events.", st.ignored
        )
        yield _counter(
            "convmetrics_consumer_dead_lettered",
            "Records sent to the dead-letter topic.",
            st.dead_lettered,
        )
        yield _counter(
            "convmetrics_consumer_fenced_partitions",
            "Partitions this process was fenced off from by a newer owner.",
            st.fenced,
        )
        yield _counter("convmetrics_consumer_commits", "Store commits.", st.commits)
        gauge = GaugeMetricFamily(
            "convmetrics_consumer_lag_records",
            "Records behind the partition's high watermark, per assigned partition.",
            labels=["partition"],
        )
        for p in sorted(lag):
            gauge.add_metric([str(p)], lag[p])
        yield gauge


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class ConsumerMetrics:
    """Prometheus metrics of one consumer process, in their own registry.

    Usage: `m = ConsumerMetrics()`, pass `m.on_commit` as the consumer's commit hook, then
    `m.watch(lambda: consumer.stats)` and serve `m.registry`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._stats: Callable[[], Stats] | None = None
        self._idle: Callable[[], float] | None = None
        self.flush_seconds = Histogram(
            "convmetrics_consumer_flush_seconds",
            "Seconds from a commit's snapshot until it is durable in the store.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "convmetrics_consumer_store_transaction_seconds",
            "Seconds of the store transaction of a commit.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(
            _StatsCollector(
                lambda: self._stats() if self._stats else None,
                lambda: self._idle() if self._idle else None,
            )
        )

    def watch(self, stats: Callable[[], Stats], idle: Callable[[], float] | None = None) -> None:
        """Read counters from `stats()` at each scrape, and the seconds since the consumer's
        last progress from `idle()` (`Watchdog.idle`)."""
        self._stats = stats
        self._idle = idle

    def on_commit(self, report: CommitReport) -> None:
        """The consumer's commit hook (runs on its writer thread)."""
        self.flush_seconds.observe(report.flush_seconds)
        self.store_seconds.observe(report.store_seconds)
