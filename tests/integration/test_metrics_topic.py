"""The metrics topics for pipelines (closure_metrics and the generic metric_rows): the
latest value per key equals the API, and a crash between commit and publication only
republishes (upsert semantics)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from convmetrics.generate import GenerateConfig, generate_webhooks
from schemas import Codec, subject
from support.gateway import free_port
from support.pipeline import ConsumerProcess, api_view, metrics_view, produce_webhooks, wait_caught_up
from support.truth import BY, COUNTERS


def latest_per_key(
    bootstrap: str, topic: str, value_subject: str = "closure_metrics"
) -> tuple[dict[str, dict[str, Any]], int]:
    codec = Codec(subject(value_subject))
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}-{free_port()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    latest: dict[str, dict[str, Any]] = {}
    records, idle = 0, 0
    try:
        while idle < 6:
            msgs = [m for m in c.consume(5000, 0.5) if m.error() is None]
            idle = 0 if msgs else idle + 1
            for m in msgs:
                records += 1
                latest[(m.key() or b"").decode()] = codec.decode(m.value() or b"")
    finally:
        c.close()
    return latest, records


def test_metrics_topic_holds_the_latest_value_of_every_row(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    cfg = GenerateConfig(
        seed=3, events=8_000, accounts=15, conversations=1_200, late_rate=0.05, duplicate_rate=0.05
    )
    webhooks = [dict(w) for w in generate_webhooks(cfg)]
    topic = new_topic(6, prefix="mtopic")
    metrics_topic, rows_topic = f"{topic}-metrics", f"{topic}-rows"
    store, port = tmp_path / "m.db", free_port()
    half = len(webhooks) // 2
    produce_webhooks(kafka_bootstrap, topic, webhooks[:half])
    extra = ["--metrics-topic", metrics_topic, "--metric-rows-topic", rows_topic, "--flush-events", "2000"]
    args = {"http_port": port, "extra": extra}
    first = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "a.log", **args)
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [first])
    finally:
        first.kill()  # possibly between a commit and its publication
    produce_webhooks(kafka_bootstrap, topic, webhooks[half:])
    second = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "b.log", **args)
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [second])
        api = api_view(f"http://127.0.0.1:{port}")
        every = metrics_view(f"http://127.0.0.1:{port}")
        deadline_rounds = 20
        while True:  # publication follows the commit; give it a moment
            latest, records = latest_per_key(kafka_bootstrap, metrics_topic)
            generic, _ = latest_per_key(kafka_bootstrap, rows_topic, "metric_rows")
            if (set(latest) == set(api) and set(generic) == set(every)) or deadline_rounds == 0:
                break
            deadline_rounds -= 1
    finally:
        second.stop()
    assert set(latest) == set(api)
    assert records >= len(api)
    for key, row in api.items():
        got = latest[key]
        assert (got["closures"], got["reopens"], got["closedUnread"]) == (
            row["closures"], row["reopens"], row["closed_unread"]), key  # fmt: skip
        assert got["windowStart"] == row["window_start"] and got["windowEnd"] == row["window_end"]
        for f in ("count", "sum", "min", "max", "mean", "p50", "p90", "p99"):
            assert got["timeToClose"][f] == row["time_to_close"][f], (key, f)
    # the generic records: every grouping, counter and distribution by name, the same numbers
    # as /v1/metrics (closure_metrics records: by channel_type and account only, above)
    assert set(generic) == set(every) and {k.split("|")[0] for k in every} == set(BY)
    for key, row in every.items():
        got = generic[key]
        assert got["grouping"] == key.split("|")[0]
        assert got["key"] == {d: str(v) for d, v in row["key"].items()}
        assert got["windowStart"] == row["window_start"] and got["windowEnd"] == row["window_end"]
        assert got["counters"] == {c: row[c] for c in COUNTERS}, key
        for name in ("time_to_close", "time_to_first_assignment", "ingest_lag"):
            for f, v in row.get(name, {}).items():  # buckets (time to close's) included: v2
                assert got["distributions"][name][f] == v, (key, name, f)
    assert any(r["distributions"]["time_to_close"]["buckets"] for r in generic.values())  # compared
