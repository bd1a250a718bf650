"""The store's metrics in Prometheus' exposition: `ClosureCollector`, labelled by channel
type only (per-account labels would explode the series count), computed at scrape time
from the all-time rows: one small query. The consumer process's own health is
`consumer.stream.exporter`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.fold import BY_CHANNEL
from consumer.fold.windows import ALL
from consumer.serve.overview import NewestWindows, all_rows
from consumer.store import Store
from consumer.store.render import row_json

QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))


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
