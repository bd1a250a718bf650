"""Prometheus exposition, each in its own registry.

- `ConsumerMetrics`: the health of one consumer process (events by type, duplicates,
  dead letters, lag, flush and store-transaction durations, fenced partitions). Counters
  are read from the consumer's `Stats` at scrape time; durations are observed by the
  consumer's commit hook.
- `ClosureCollector`: the closure metrics of the store, labelled by channel type only
  (per-account labels would explode the series count), computed at scrape time from the
  all-time rows: one small query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.fold import BY_CHANNEL
from consumer.overview import NewestWindows, all_rows
from consumer.query import row_json
from consumer.store import Store
from consumer.windows import ALL

if TYPE_CHECKING:
    from consumer.runner import CommitReport, Stats

#: Commits take milliseconds to a few seconds (a 50,000-event flush on a slow disk).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))


class _StatsCollector(Collector):
    def __init__(self, stats: Callable[[], Stats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        st = self._stats()
        if st is None:
            return
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
        self.registry.register(_StatsCollector(lambda: self._stats() if self._stats else None))

    def watch(self, stats: Callable[[], Stats]) -> None:
        """Read counters from `stats()` at each scrape."""
        self._stats = stats

    def on_commit(self, report: CommitReport) -> None:
        """The consumer's commit hook (runs on its writer thread)."""
        self.flush_seconds.observe(report.flush_seconds)
        self.store_seconds.observe(report.store_seconds)


class ClosureCollector(Collector):
    """Closure metrics per channel type from the store's all-time rows, at scrape time.

    Args:
        store: returns the store to read (called on the scraping thread).
        newest: shared finder of the newest windows (remembers where to start looking).
    """

    def __init__(self, store: Callable[[], Store], newest: NewestWindows | None = None) -> None:
        self._store = store
        self._newest = newest or NewestWindows()

    def collect(self) -> Iterable[Metric]:
        store = self._store()
        rows = [row_json(r) for r in all_rows(store, BY_CHANNEL, ALL)]
        label = ["channel_type"]
        closures = CounterMetricFamily("convmetrics_closures", "Conversations closed.", labels=label)
        reopens = CounterMetricFamily("convmetrics_reopens", "Conversations reopened.", labels=label)
        unread = CounterMetricFamily(
            "convmetrics_closed_unread",
            "Closures whose customer's last message was never read.",
            labels=label,
        )
        ttc = Metric(
            "convmetrics_time_to_close_seconds",
            "Seconds from the latest create or reopen to the close; quantiles from a sketch "
            "with at most 1% relative error.",
            "summary",
        )
        for row in rows:
            key = row["key"]
            closures.add_metric([key], row["closures"])
            reopens.add_metric([key], row["reopens"])
            unread.add_metric([key], row["closed_unread"])
            t = row["time_to_close"]
            for q, field in QUANTILES:
                if t[field] is not None:
                    ttc.add_sample(ttc.name, {"channel_type": key, "quantile": q}, t[field])
            ttc.add_sample(ttc.name + "_count", {"channel_type": key}, t["count"])
            ttc.add_sample(ttc.name + "_sum", {"channel_type": key}, t["sum"])
        yield from (closures, reopens, unread, ttc)
        newest = GaugeMetricFamily(
            "convmetrics_newest_window_start_seconds",
            "Start (unix s) of the newest window holding data, per window size: how far event time has got.",
            labels=["window"],
        )
        for window, start in self._newest.find(store).items():
            if start is not None:
                newest.add_metric([window], start)
        yield newest
