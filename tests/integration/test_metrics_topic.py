"""The metrics topics for pipelines (closure_metrics and the generic metric_rows): the
latest value per key equals the API, and a crash between a commit and the end of its
publication only republishes (upsert semantics)."""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from consumer.stream.metrics_topic import KILL_MID_PUBLICATION_ENV
from convmetrics.generate import GenerateConfig, generate_webhooks
from schemas import Codec, subject
from support.gateway import free_port
from support.pipeline import (
    ConsumerProcess,
    api_view,
    backlog_view,
    end_offsets,
    metrics_view,
    produce_webhooks,
    stored_offsets,
    wait_caught_up,
)
from support.truth import BY, COUNTERS


def latest_per_key(
    bootstrap: str, topic: str, value_subject: str = "closure_metrics"
) -> tuple[dict[str, dict[str, Any]], int]:
    """The topic read compacted-wise (the latest value per key), and how many records it has."""
    codec = Codec(subject(value_subject))
    ends = {p: end for p, end in end_offsets(bootstrap, topic).items() if end > 0}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}",
                  "enable.auto.commit": False})  # fmt: skip
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    latest: dict[str, dict[str, Any]] = {}
    records, left = 0, dict(ends)
    deadline = time.monotonic() + 60
    try:
        while left:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(left)} not read to their end"
            for m in c.consume(5000, 0.5):
                assert m.error() is None, m.error()
                records += 1
                latest[(m.key() or b"").decode()] = codec.decode(m.value() or b"")
                if (m.offset() or 0) + 1 >= left.get(m.partition() or 0, 1 << 62):
                    del left[m.partition() or 0]
    finally:
        c.close()
    return latest, records


def publication(store: Path, topic: str) -> tuple[int, int]:
    """(how far the topic's publication got, the newest commit's seq): the store's outbox."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        (mark,) = db.execute("SELECT max(seq) FROM published_marks WHERE topic = ?", (topic,)).fetchone()
        (newest,) = db.execute("SELECT max(seq) FROM metric_rows").fetchone()
    finally:
        db.close()
    return mark or 0, newest or 0


def wait_published(store: Path, topics: list[str], proc: ConsumerProcess, timeout: float = 60) -> None:
    """Until every topic's mark reached the newest commit (its rows acknowledged by Kafka)."""
    deadline = time.monotonic() + timeout
    while any((got := publication(store, t))[0] < got[1] for t in topics):
        assert proc.alive(), f"consumer died:\n{proc.tail()}"
        assert time.monotonic() < deadline, (
            f"not published after {timeout} s: {publication(store, topics[0])}"
        )
        time.sleep(0.1)


def cleanup_policies(bootstrap: str, topics: list[str]) -> dict[str, str]:
    """Each topic's cleanup.policy, as the broker describes it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics])
    return {r.name: f.result(30)["cleanup.policy"].value for r, f in found.items()}


def records_in(bootstrap: str, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic).values())  # no transactions: one offset a record


KILL_AFTER = 5  # records of a publication on the broker when the hook kills the consumer


def test_metrics_topic_holds_the_latest_value_of_every_row(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A consumer is killed in the middle of its first publication (KILL_MID_PUBLICATION_ENV:
    the commit durable, its first rows on the broker, the rest not, the mark not moved); the
    next one republishes from the mark as soon as it is assigned the partitions, before any
    new record. Read compacted-wise, both topics equal the API:
    nothing lost, the duplicates harmless."""
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
    hook = {KILL_MID_PUBLICATION_ENV: str(KILL_AFTER)}
    first = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "a.log", **args, env=hook)
    try:
        assert first.proc.wait(120) == -signal.SIGKILL, first.tail()  # it killed itself
    finally:
        first.kill()
    said = re.search(
        rf"{KILL_MID_PUBLICATION_ENV}: .* after (\d+) records, before the next of this pass's (\d+) rows",
        first.log.read_text(),
    )
    assert said and int(said[1]) == KILL_AFTER < int(said[2]), first.tail()
    mark, newest = publication(store, metrics_topic)
    assert sum(stored_offsets(store).values()) > 0 and newest > 0  # it had committed,
    assert mark == 0  # its publication had not moved the mark,
    assert records_in(kafka_bootstrap, metrics_topic) == KILL_AFTER  # and KILL_AFTER rows went out
    # the consumer made both topics compacted: Kafka keeps the latest value of each key
    assert cleanup_policies(kafka_bootstrap, [metrics_topic, rows_topic]) == dict.fromkeys(
        [metrics_topic, rows_topic], "compact"
    )

    # the killed pass's rows go out as soon as the next owner is assigned the partitions
    # (docs/api.md), with no new record to commit: the topic is quiet while it starts
    second = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "b.log", **args)
    try:
        wait_published(store, [metrics_topic, rows_topic], second)
        assert publication(store, metrics_topic)[1] == newest  # published, nothing committed
        assert records_in(kafka_bootstrap, metrics_topic) > KILL_AFTER
        produce_webhooks(kafka_bootstrap, topic, webhooks[half:])  # then news, as usual
        wait_caught_up(kafka_bootstrap, topic, store, [second])
        wait_published(store, [metrics_topic, rows_topic], second)
        api = api_view(f"http://127.0.0.1:{port}")
        every = metrics_view(f"http://127.0.0.1:{port}")
        backlog = backlog_view(f"http://127.0.0.1:{port}")
        latest, records = latest_per_key(kafka_bootstrap, metrics_topic)
        generic, _ = latest_per_key(kafka_bootstrap, rows_topic, "metric_rows")
    finally:
        second.stop()
    assert set(latest) == set(api)
    assert records > len(api)  # rows republished (the killed pass's first ones among them)
    for key, row in api.items():
        got = latest[key]
        assert (got["closures"], got["reopens"], got["closedUnread"]) == (
            row["closures"], row["reopens"], row["closed_unread"]), key  # fmt: skip
        assert got["windowStart"] == row["window_start"] and got["windowEnd"] == row["window_end"]
        for f in ("count", "sum", "min", "max", "mean", "p50", "p90", "p99"):
            assert got["timeToClose"][f] == row["time_to_close"][f], (key, f)
    # the generic records: every grouping, counter and distribution by name, the same numbers
    # as /v1/metrics (closure_metrics records: by channel_type and account only, above)
    live = {k: r for k, r in generic.items() if r["window"] == "live"}
    assert set(generic) - set(live) == set(every) and {k.split("|")[0] for k in every} == set(BY)
    # the live gauges (v3): every backlog key with /v1/backlog's numbers, and the keys that
    # went back to 0 (which /v1/backlog leaves out) published as 0, not left at an old value
    assert {k: r["gauges"] for k, r in live.items() if any(r["gauges"].values())} == backlog
    assert {k.split("|")[0] for k in backlog} == set(BY)
    assert any(not any(r["gauges"].values()) for r in live.values())
    assert all(not r["counters"] and not r["distributions"] for r in live.values())
    for key, row in every.items():
        assert generic[key]["gauges"] == {}, key
        got = generic[key]
        assert got["grouping"] == key.split("|")[0]
        assert got["key"] == {d: str(v) for d, v in row["key"].items()}
        assert got["windowStart"] == row["window_start"] and got["windowEnd"] == row["window_end"]
        assert got["counters"] == {c: row[c] for c in COUNTERS}, key
        for name in ("time_to_close", "time_to_first_assignment", "ingest_lag"):
            for f, v in row.get(name, {}).items():  # buckets (time to close's) included: v2
                assert got["distributions"][name][f] == v, (key, name, f)
    assert any(r["distributions"]["time_to_close"]["buckets"] for r in generic.values())  # compared


def test_a_metrics_topic_publisher_puts_its_schemas_in_the_schema_topic(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """As the gateway does for the events: a reader older than this build (here one that
    ships only v1 of each metrics subject) resolves a record's fingerprint from Kafka."""
    from consumer.stream.metrics_topic import FORMATS, MetricsTopicPublisher
    from schemas import Subject
    from schemas.topic_registry import TopicSchemaResolver

    for value_subject in FORMATS:
        publisher = MetricsTopicPublisher(
            kafka_bootstrap, new_topic(1, prefix=f"schemas-{value_subject}"), value_subject=value_subject
        )
        publisher.producer.flush(10)
        shipped = subject(value_subject)
        resolver = TopicSchemaResolver(kafka_bootstrap)
        for version in shipped.versions:
            assert resolver(version.fingerprint) == version.raw, (value_subject, version.version)
        if len(shipped.versions) > 1:  # an old reader decodes what this build writes
            old = Codec(Subject(shipped.name, shipped.versions[:1]), resolve_unknown=resolver)
            decoded = old.decode(Codec(shipped).encode(example_record(value_subject)))
            assert decoded["counters"] == {"closures": 2} and "gauges" not in decoded


def example_record(value_subject: str) -> dict[str, Any]:
    """A metric_rows record of the latest version (buckets: v2, gauges: v3)."""
    assert value_subject == "metric_rows"
    stats = {"sum": 30.0, "min": 10.0, "max": 20.0, "mean": 15.0, "p50": 10.0, "p90": 20.0, "p99": 20.0}
    return {
        "grouping": "channel_type",
        "key": {"channel_type": "TELEGRAM"},
        "window": "1h",
        "windowStart": 1_700_000_000,
        "windowEnd": 1_700_003_600,
        "counters": {"closures": 2},
        "distributions": {"time_to_close": {"count": 2, **stats, "buckets": {"le_1h": 2}}},
        "publishedAtMillis": 1,
        "gauges": {},
    }


def test_rows_the_topic_refuses_stay_unpublished_and_stop_the_publisher_saying_why(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A record the broker refuses (larger than the topic takes; under ACLs, a topic this
    client may not write) comes back as a delivery error: the pass fails naming it and
    the marks do not move, so nothing is counted published that is not on the topic."""
    import uuid

    import pytest
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
    from unit.consumer.test_api import EVENTS, fill

    from consumer.exceptions import ConsumerError
    from consumer.store.sqlite import SqliteStore
    from consumer.stream.metrics_topic import MetricsTopicPublisher

    db = tmp_path / "m.db"
    fill(db, EVENTS)
    topic = f"small-rows-{uuid.uuid4().hex[:8]}"
    config = {"cleanup.policy": "compact", "max.message.bytes": "64"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
    publisher = MetricsTopicPublisher(kafka_bootstrap, topic, value_subject="metric_rows")
    store = SqliteStore(str(db))
    try:
        before = store.published_marks([0], topic)
        with pytest.raises(ConsumerError, match=f"metrics topic {topic} refused .* rows .*unpublished"):
            publisher.publish_pending(store, [0])
        assert store.published_marks([0], topic) == before
        assert store.changed_since(before)[0]  # the rows are still to publish
    finally:
        store.close()
