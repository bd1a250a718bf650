"""The store's metrics in Prometheus' exposition: `ClosureCollector`, labelled by channel
type only (per-account labels would explode the series count; a summary's quantile and a
distribution's bucket are bounded names), computed at scrape time from the all-time rows:
one small query. The consumer process's own health is
`consumer.stream.exporter`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.fold import BY_CHANNEL
from consumer.fold.registry import Kind
from consumer.fold.registry import Metric as RegistryMetric
from consumer.fold.windows import ALL
from consumer.serve.overview import MAX_LABEL_VALUES, OTHER, all_rows, newest_windows, top_channels
from consumer.store import MetricRow, Store
from consumer.store.render import distribution_json

QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))


class ClosureCollector(Collector):
    """Closure metrics per channel type from the store's all-time rows, at scrape time.

    Args:
        store: returns the store to read (called on the scraping thread).
        max_label_values: channel types shown by name, the busiest; the rest under `_other`.
    """

    def __init__(self, store: Callable[[], Store], max_label_values: int = MAX_LABEL_VALUES) -> None:
        self._store = store
        self.max_label_values = max_label_values

    def collect(self) -> Iterable[Metric]:
        store = self._store()
        rows, folded = top_channels(all_rows(store, BY_CHANNEL, ALL), self.max_label_values, store.registry)
        yield GaugeMetricFamily(
            "convmetrics_channel_types_folded",
            f"Channel types beyond the busiest {self.max_label_values} (--max-label-values), summed under "
            f'channel_type="{OTHER}" in these metrics.',
            value=folded,
        )
        label = ["channel_type"]
        for m in store.registry.metrics:
            if not m.counts_in(BY_CHANNEL, ALL):
                continue
            if m.kind is Kind.COUNTER:
                family = CounterMetricFamily(f"convmetrics_{m.name}", m.description, labels=label)
                for row in rows:
                    family.add_metric([row.key], row.values[m.column] or 0)
                yield family
            elif m.kind is Kind.DISTRIBUTION:
                stats = [distribution_json(row, m) for row in rows]
                yield _summary(m, rows, stats)
                if any("buckets" in st for st in stats):
                    yield _buckets(m, rows, stats)
        if store.registry.gauges:
            yield from _gauges(store, {row.key for row in rows})
        newest = GaugeMetricFamily(
            "convmetrics_newest_window_start_seconds",
            "Start (unix s) of the newest window holding data, per window size: how far event time has got.",
            labels=["window"],
        )
        for window, start in newest_windows(store).items():
            if start is not None:
                newest.add_metric([window], start)
        yield newest


def _gauges(store: Store, named: set[str]) -> Iterable[Metric]:
    """The live gauges (`GET /v1/backlog?group=channel_type`) per channel type: those shown
    by name in the other metrics keep it (0 included), the rest are summed under `_other`."""
    _, found = store.backlog(BY_CHANNEL)
    by_label: dict[str, list[int]] = {key: [0, 0, 0] for key in named}
    for key, *values in found:
        sums = by_label.setdefault(key if key in named or not named else OTHER, [0, 0, 0])
        for i, v in enumerate(values):
            sums[i] += v
    for i, g in enumerate(store.registry.gauges):
        family = GaugeMetricFamily(
            f"convmetrics_{g.name}_conversations", f"{g.description} Live, now.", labels=["channel_type"]
        )
        for label, sums in sorted(by_label.items()):
            family.add_metric([label], sums[i])
        yield family


#: a distribution's unit as Prometheus names it (base units: milliseconds are shown in seconds)
_UNITS = {"s": "seconds", "ms": "seconds"}


def _buckets(m: RegistryMetric, rows: list[MetricRow], stats: list[dict[str, Any]]) -> Metric:
    """A distribution's exact buckets (time to close's SLA buckets: `le_1h`, ..., `gt_24h`,
    as the API shows them) as a counter per channel type and bucket: the bucket names are
    the declared bounds, so the label stays bounded."""
    family = CounterMetricFamily(
        f"convmetrics_{m.name}_buckets",
        f"{m.description} Counted in disjoint buckets by value (le_<bound>: above the bound "
        "before it, at most this one; gt_<bound>: above the last).",
        labels=["channel_type", "bucket"],
    )
    for row, st in zip(rows, stats, strict=True):
        for bucket, n in (st.get("buckets") or {}).items():
            family.add_metric([row.key, bucket], n)
    return family


def _summary(m: RegistryMetric, rows: list[MetricRow], stats: list[dict[str, Any]]) -> Metric:
    """A distribution as a Prometheus summary per channel type: its sketch quantiles (as
    the API shows them), exact count and sum, in base units."""
    unit = _UNITS.get(m.unit, m.unit)
    summary = Metric(
        f"convmetrics_{m.name}_{unit}",
        f"{m.description} Quantiles from a sketch with at most 1% relative error.",
        "summary",
    )
    for row, st in zip(rows, stats, strict=True):
        labels = {"channel_type": row.key}
        for q, field in QUANTILES:
            if st[field] is not None:
                summary.add_sample(summary.name, {**labels, "quantile": q}, st[field])
        summary.add_sample(summary.name + "_count", labels, row.values[f"{m.column}_count"] or 0)
        total = row.values[f"{m.column}_sum"] or 0
        summary.add_sample(summary.name + "_sum", labels, total if m.scale == 1 else total / m.scale)
    return summary
