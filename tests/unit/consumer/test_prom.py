"""Prometheus exposition of the consumer's health and of the closure metrics, read back with
prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.fold import PartitionFold
from consumer.fold.model import CLOSED, CREATED, Event
from consumer.serve.prom import ClosureCollector
from consumer.store import PartitionCommit
from consumer.store.render import row_json
from consumer.store.sqlite import SqliteStore
from consumer.stream.checkpoint import CommitReport
from consumer.stream.exporter import ConsumerMetrics
from consumer.stream.partitions import Stats

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, sorted labels), and each family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def test_consumer_health_is_read_from_stats_at_scrape_time() -> None:
    m = ConsumerMetrics()
    stats = Stats(consumed=120, folded=100, duplicates=9, ignored=8, dead_lettered=3, fenced=2, commits=5)
    stats.by_type = {"conversation.closed": 40, "conversation.created": 60}
    stats.lag = {0: 7, 2: 0}
    m.watch(lambda: stats)
    got, types = scrape(m.registry)
    assert got[("convmetrics_consumer_records_total", ())] == 120
    assert got[("convmetrics_consumer_events_total", (("type", "conversation.closed"),))] == 40
    assert got[("convmetrics_consumer_events_total", (("type", "conversation.created"),))] == 60
    assert got[("convmetrics_consumer_duplicates_total", ())] == 9
    assert got[("convmetrics_consumer_ignored_total", ())] == 8
    assert got[("convmetrics_consumer_dead_lettered_total", ())] == 3
    assert got[("convmetrics_consumer_fenced_partitions_total", ())] == 2
    assert got[("convmetrics_consumer_commits_total", ())] == 5
    assert got[("convmetrics_consumer_lag_records", (("partition", "0"),))] == 7
    assert got[("convmetrics_consumer_lag_records", (("partition", "2"),))] == 0
    assert types["convmetrics_consumer_lag_records"] == "gauge"
    assert types["convmetrics_consumer_events"] == "counter"

    stats.duplicates += 1  # a later scrape sees the new value: nothing is cached
    stats.lag = {0: 0}
    got, _ = scrape(m.registry)
    assert got[("convmetrics_consumer_duplicates_total", ())] == 10
    assert ("convmetrics_consumer_lag_records", (("partition", "2"),)) not in got
    assert not any(name == "convmetrics_consumer_progress_age_seconds" for name, _ in got)


def test_the_seconds_since_the_consumers_last_progress_are_a_gauge() -> None:
    """`Watchdog.idle` at each scrape: what an alert on a consumer about to stall reads."""
    from consumer.stream.watchdog import WRITER, Watchdog

    now = [100.0]
    dog = Watchdog(60, lambda: now[0])
    m = ConsumerMetrics()
    m.watch(Stats, dog.idle)
    now[0] += 42.5
    got, types = scrape(m.registry)
    assert got[("convmetrics_consumer_progress_age_seconds", ())] == 42.5
    assert types["convmetrics_consumer_progress_age_seconds"] == "gauge"
    dog.beat(WRITER, "writing a commit to the store (attempt 1)")
    now[0] += 1
    assert scrape(m.registry)[0][("convmetrics_consumer_progress_age_seconds", ())] == 1


def test_commit_hook_observes_flush_and_store_durations() -> None:
    m = ConsumerMetrics()
    for flush, store in ((0.004, 0.003), (0.2, 0.15), (3.0, 2.0)):
        m.on_commit(CommitReport(partitions=[], flush_seconds=flush, store_seconds=store, fenced=[]))
    got, types = scrape(m.registry)
    assert types["convmetrics_consumer_flush_seconds"] == "histogram"
    assert got[("convmetrics_consumer_flush_seconds_count", ())] == 3
    assert got[("convmetrics_consumer_flush_seconds_sum", ())] == pytest.approx(3.204)
    assert got[("convmetrics_consumer_flush_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("convmetrics_consumer_store_transaction_seconds_count", ())] == 3
    assert got[("convmetrics_consumer_store_transaction_seconds_bucket", (("le", "0.25"),))] == 2
    # before watch(): the histograms are there, the counters are not yet
    assert ("convmetrics_consumer_records_total", ()) not in got


def test_registries_are_separate() -> None:
    a, b = ConsumerMetrics(), ConsumerMetrics()  # two in one process must not clash
    a.on_commit(CommitReport([], 1.0, 1.0, []))
    assert scrape(b.registry)[0][("convmetrics_consumer_flush_seconds_count", ())] == 0


def test_closure_metrics_per_channel_type_match_the_all_time_rows(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.db"))
    store.check_topic("events")
    fold = PartitionFold(0)
    t0 = 1_700_000_000
    for i in range(50):  # EMAIL: 50 timed closures, 10..500 s; every 5th unread
        fold.apply(Event(CREATED, 2 * i, 1 + i % 3, i, "EMAIL", t0))
        fold.apply(
            Event(
                CLOSED, 2 * i + 1, 1 + i % 3, i, "EMAIL", t0 + 10 * (i + 1), None, t0 if i % 5 == 0 else None
            )
        )
    fold.apply(Event(CLOSED, 999, 4, 999, "FAX", t0 + 5))  # a closure without a start: untimed
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 101, fold.watermark, changed)])

    registry = CollectorRegistry()
    registry.register(ClosureCollector(lambda: store))
    got, types = scrape(registry)
    rows = {r["key"]: r for r in (row_json(x) for x in store.query("channel_type", "all"))}
    assert types["convmetrics_time_to_close_seconds"] == "summary"
    for key, row in rows.items():
        ct = (("channel_type", key),)
        assert got[("convmetrics_closures_total", ct)] == row["closures"]
        assert got[("convmetrics_reopens_total", ct)] == row["reopens"]
        assert got[("convmetrics_closed_unread_total", ct)] == row["closed_unread"]
        ttc = row["time_to_close"]
        assert got[("convmetrics_time_to_close_seconds_count", ct)] == ttc["count"]
        assert got[("convmetrics_time_to_close_seconds_sum", ct)] == ttc["sum"]
        for q, field in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
            sample = ("convmetrics_time_to_close_seconds", (("channel_type", key), ("quantile", q)))
            if ttc[field] is None:
                assert sample not in got
            else:
                assert got[sample] == ttc[field]
    assert got[("convmetrics_closures_total", (("channel_type", "EMAIL"),))] == 50
    assert got[("convmetrics_closed_unread_total", (("channel_type", "EMAIL"),))] == 10
    assert got[("convmetrics_time_to_close_seconds_sum", (("channel_type", "EMAIL"),))] == 10 * 50 * 51 / 2
    assert got[("convmetrics_time_to_close_seconds", (("channel_type", "EMAIL"), ("quantile", "0.5")))] == (
        pytest.approx(250, rel=0.03)
    )
    assert got[("convmetrics_time_to_close_seconds_count", (("channel_type", "FAX"),))] == 0
    newest_minute = t0 + 500 - (t0 + 500) % 60
    assert got[("convmetrics_newest_window_start_seconds", (("window", "1m"),))] == newest_minute
    labels = {label for _, ls in got for label, _ in ls}
    assert labels <= {"channel_type", "quantile", "bucket", "window"}  # never an account label


def test_closure_metrics_of_an_empty_store(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.db"))
    registry = CollectorRegistry()
    registry.register(ClosureCollector(lambda: store))
    got, types = scrape(registry)
    assert got == {("convmetrics_channel_types_folded", ()): 0} and "convmetrics_closures" in types


@pytest.mark.parametrize("limit", [2, 4, 5])
def test_channel_types_beyond_the_busiest_n_are_summed_under_other(tmp_path: Path, limit: int) -> None:
    """`--max-label-values`: /metrics and /v1/summary name the N channel types with the most
    closures (ties by name) and sum the rest, exactly, under `_other`; totals stay whole."""
    from starlette.testclient import TestClient

    from consumer.serve.api import create_app

    store = SqliteStore(str(tmp_path / "m.db"))
    store.check_topic("events")
    fold = PartitionFold(0)
    h = 0
    closures = {"ABM": 1, "GBM": 3, "LINE": 1, "SMS": 5, "VBM": 2}  # ABM and LINE tie at 1
    for ch, n in closures.items():
        for i in range(n):
            h += 2
            fold.apply(Event(CREATED, h, 7, h, ch, 1_000, None, None))
            fold.apply(Event(CLOSED, h + 1, 7, h, ch, 1_000 + 60 * (i + 1) * len(ch)))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 1, fold.watermark, changed)])
    app = TestClient(create_app(lambda: SqliteStore(str(tmp_path / "m.db")), max_label_values=limit))

    got, _ = scrape_text(app.get("/metrics").text)
    named = {dict(k[1])["channel_type"]: v for k, v in got.items() if k[0] == "convmetrics_closures_total"}
    ranked = ["SMS", "GBM", "VBM", "ABM", "LINE"]
    folded = ranked[limit:]
    want = {ch: float(closures[ch]) for ch in ranked[:limit]}
    if folded:
        want["_other"] = float(sum(closures[ch] for ch in folded))
    assert named == want
    assert got[("convmetrics_channel_types_folded", ())] == len(folded)
    ttc_count = {
        dict(k[1])["channel_type"]: v
        for k, v in got.items()
        if k[0] == "convmetrics_time_to_close_seconds_count"
    }
    assert sum(ttc_count.values()) == sum(closures.values())

    summary = app.get("/v1/summary").json()
    shown = [*ranked[:limit], "_other"] if folded else sorted(closures)  # unbounded: as before, by name
    assert [r["key"] for r in summary["channel_types"]] == shown
    assert summary["totals"]["closures"] == sum(closures.values())  # over every channel type
    if folded:
        other = summary["channel_types"][-1]
        parts = [r for r in store.query("channel_type", "all") if r.key in folded]
        ttc = other["time_to_close"]
        assert ttc["count"] == sum(p.ttc_count for p in parts) and ttc["sum"] == sum(p.ttc_sum for p in parts)
        assert (ttc["min"], ttc["max"]) == (min(p.ttc_min for p in parts), max(p.ttc_max for p in parts))
        assert ttc["min"] <= ttc["p50"] <= ttc["max"]


def scrape_text(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


@pytest.mark.parametrize("name", ["closures", "full"])
def test_the_running_metric_sets_counters_and_distributions_are_exposed(tmp_path: Path, name: str) -> None:
    """What `/metrics` shows follows the store's metric set: every counter and distribution of
    it that counts by channel type (the full set's created, assignments, snoozes and
    closed_window_expired too), none of another set, labelled by channel type only."""
    from consumer.fold.model import ASSIGNED, SNOOZED
    from consumer.fold.registry import METRIC_SETS, Kind

    registry = METRIC_SETS[name]
    store = SqliteStore(str(tmp_path / "m.db"), registry=registry)
    store.check_topic("events")
    fold = PartitionFold(0, registry=registry)
    t0 = 1_700_000_000
    for kind, h, t, expires in (
        (CREATED, 1, t0, None),
        (ASSIGNED, 2, t0 + 5, None),
        (SNOOZED, 3, t0 + 9, None),
        (CLOSED, 4, t0 + 60, t0 + 59),  # its messaging window expired a second before
    ):
        fold.apply(Event(kind, h, 7, 1, "SMS", t, None, None, None, 30, 1007, expires))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 4, fold.watermark, changed)])
    prom = CollectorRegistry()
    prom.register(ClosureCollector(lambda: store))
    got, types = scrape(prom)
    sms = (("channel_type", "SMS"),)
    (row,) = [row_json(r, registry) for r in store.query("channel_type", "all")]
    shown = [m for m in registry.metrics if m.counts_in("channel_type", "all")]
    for m in shown:
        if m.kind is Kind.COUNTER:
            assert got[(f"convmetrics_{m.name}_total", sms)] == row[m.name], m.name
        elif m.kind is Kind.DISTRIBUTION:
            assert types[f"convmetrics_{m.name}_seconds"] == "summary"
            assert got[(f"convmetrics_{m.name}_seconds_count", sms)] == row[m.name]["count"], m.name
    counters = {n.removeprefix("convmetrics_") for n, t in types.items() if t == "counter"}
    bucketed = {
        f"{m.name}_buckets" for m in shown if m.kind is Kind.DISTRIBUTION and "buckets" in row[m.name]
    }
    assert counters == {m.name for m in shown if m.kind is Kind.COUNTER} | bucketed
    if name == "full":
        for counter in ("created", "assignments", "snoozes", "closed_window_expired", "closures"):
            assert got[(f"convmetrics_{counter}_total", sms)] == 1, counter
    else:
        assert "convmetrics_created" not in types
    labels = {label for _, ls in got for label, _ in ls}
    assert labels <= {"channel_type", "quantile", "bucket", "window"}


def test_a_distributions_buckets_are_a_counter_per_channel_type_and_bucket(tmp_path: Path) -> None:
    """Time to close's SLA buckets (full set) are `convmetrics_time_to_close_buckets_total
    {channel_type, bucket}`, the API's exact counts, a closure at a bound in the bucket it
    closes; a distribution without buckets (ingest lag) has no such family."""
    store = SqliteStore(str(tmp_path / "m.db"))
    store.check_topic("events")
    fold = PartitionFold(0)
    durations = {"SMS": (600, 3600, 3601, 90_000), "LINE": (14_400,)}  # le_1h x2, le_4h x2, gt_24h
    h = 0
    for ch, ds in durations.items():
        for d in ds:
            h += 2
            fold.apply(Event(CREATED, h, 7, h, ch, 1_000))
            fold.apply(Event(CLOSED, h + 1, 7, h, ch, 1_000 + d))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, h, fold.watermark, changed)])
    registry = CollectorRegistry()
    registry.register(ClosureCollector(lambda: store))
    got, types = scrape(registry)
    assert types["convmetrics_time_to_close_buckets"] == "counter"
    rows = {r.key: row_json(r)["time_to_close"]["buckets"] for r in store.query("channel_type", "all")}
    assert rows["SMS"] == {"le_1h": 2, "le_4h": 1, "le_8h": 0, "le_24h": 0, "gt_24h": 1}
    assert rows["LINE"]["le_4h"] == 1  # 14,400 s: at the bound, in it
    for ch, buckets in rows.items():
        for bucket, n in buckets.items():
            assert (
                got[("convmetrics_time_to_close_buckets_total", (("bucket", bucket), ("channel_type", ch)))]
                == n
            )
    assert "convmetrics_ingest_lag_buckets" not in types


def test_the_gauges_are_labelled_by_channel_type_only(tmp_path: Path) -> None:
    """`/v1/backlog?group=channel_type` as gauges; a channel type named by the other
    metrics without an open conversation shows 0; the rest beyond the busiest are `_other`."""
    from consumer.fold.model import ASSIGNED, SNOOZED

    store = SqliteStore(str(tmp_path / "m.db"))
    store.check_topic("events")
    fold = PartitionFold(0)
    t0 = 1_700_000_000
    steps = [
        (CREATED, "EMAIL"),
        (ASSIGNED, "EMAIL"),
        (CREATED, "EMAIL"),
        (SNOOZED, "EMAIL"),
        (CREATED, "SMS"),
    ]
    for i, (kind, ch) in enumerate(steps):
        fold.apply(Event(kind, i, 1, i // 2, ch, t0 + i, event_id=str(i)))
    for c in range(3):  # FAX: the busiest by closures, none open
        fold.apply(Event(CLOSED, 100 + c, 2, 100 + c, "FAX", t0, event_id=f"f{c}"))
    delta, changed = fold.take_changes()
    store.commit("events", [PartitionCommit(0, delta, 9, fold.watermark, changed)])
    for limit, sms in ((10, "SMS"), (1, "_other")):
        registry = CollectorRegistry()
        registry.register(ClosureCollector(lambda: store, max_label_values=limit))
        got, types = scrape(registry)
        assert types["convmetrics_open_conversations"] == "gauge"
        gauges = {
            (
                name.removeprefix("convmetrics_").removesuffix("_conversations"),
                dict(labels)["channel_type"],
            ): v
            for (name, labels), v in got.items()
            if name.endswith("_conversations")
        }
        want = {("open", "EMAIL"): 1, ("unassigned", "EMAIL"): 0, ("snoozed", "EMAIL"): 1}
        want |= {("open", sms): 1, ("unassigned", sms): 1, ("snoozed", sms): 0}
        want |= {(g, "FAX"): 0 for g in ("open", "unassigned", "snoozed")}
        if limit == 1:  # EMAIL is folded into _other with SMS
            want = {(g, ch): v for (g, ch), v in want.items() if ch != "EMAIL"}
            want |= {("open", "_other"): 2, ("unassigned", "_other"): 1, ("snoozed", "_other"): 1}
        assert gauges == want, limit
