"""What the consumer does besides counting, run in-process against a real broker and real
stores: the periodic expiry of idle conversations and purge of rows past retention (on
SQLite and PostgreSQL), and the dead-letter topic's promise that the store's offset moves
past a poison record only once the DLQ acknowledged it (with the DLQ producer failing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from consumer.exceptions import ConsumerError
from consumer.store import Retention, open_store
from consumer.stream import runner
from consumer.stream.metrics_topic import MetricsTopicPublisher
from consumer.stream.runner import MetricsConsumer
from consumer.stream.settings import ConsumerSettings
from schemas import conversation_codec
from support.gateway import free_port
from support.pipeline import produce_raw

T0 = 1_700_000_040  # a minute's first second
DAY = 86400


def record(verb: str, event_id: str, conversation: int, t: int) -> tuple[bytes, bytes]:
    """A conversation event as the gateway produces it (key, Avro value)."""
    value = conversation_codec().encode(
        {
            "event": f"conversation.{verb}",
            "id": event_id,
            "account": 7,
            "app": 1,
            "createdAt": t,
            "deliveryAttempts": 1,
            "data": {"id": conversation, "channelType": "TELEGRAM", f"{verb}At": t},
        }
    )
    return str(conversation).encode(), value


def run_until(c: MetricsConsumer, done: Callable[[], bool], timeout: float = 90) -> None:
    """Run the consumer until `done()` (checked between polls) or `timeout`; then `done()`
    must hold."""
    deadline = time.monotonic() + timeout
    c.run(until=lambda _: done() or time.monotonic() > deadline)
    assert done(), f"not done within {timeout:.0f} s"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_the_runner_expires_idle_conversations_and_purges_old_rows(
    kafka_bootstrap: str, new_topic: Callable[..., str], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the expiry period at zero every commit expires and purges (the period itself is
    a constant, runner.EXPIRE_EVERY): conversation 1, idle for 10 days of event time beyond
    a 1-day TTL, is forgotten by the store, and its 1-minute rows, older than 2 hours of
    retention, are purged; conversation 2 and the rows kept forever stay."""
    monkeypatch.setattr(runner, "EXPIRE_EVERY", 0.0)
    topic = new_topic(1, prefix="upkeep")
    produce_raw(kafka_bootstrap, topic, [
        record("created", "a1", 1, T0), record("closed", "a2", 1, T0 + 30),
        record("created", "b1", 2, T0 + 10 * DAY), record("closed", "b2", 2, T0 + 10 * DAY + 30),
    ])  # fmt: skip
    settings = ConsumerSettings(
        kafka_bootstrap, topic=topic, group=f"g-{topic}", store_url=store_url,
        conversation_ttl=DAY, retention=Retention(minute=2 * 3600, hour=None), flush_interval=0.1,
    )  # fmt: skip
    reader = open_store(store_url)
    try:

        def done() -> bool:
            state = reader.load_partition(topic, 0)
            minutes = {r.window_start for r in reader.query("channel_type", "1m")}
            return (
                state.next_offset == 4 and set(state.conversations) == {(7, 2)} and minutes == {T0 + 10 * DAY}
            )

        run_until(MetricsConsumer(settings), done)
        hours = [r.window_start for r in reader.query("channel_type", "1h")]
        assert hours == [T0 - T0 % 3600, T0 + 10 * DAY - T0 % 3600]  # kept forever here
        (all_time,) = reader.query("channel_type", "all")
        assert (all_time.closures, all_time.ttc_sum) == (2, 60)
    finally:
        reader.close()


def test_rows_purged_past_retention_are_tombstoned_on_the_metrics_topics(
    kafka_bootstrap: str, new_topic: Callable[..., str], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1-minute row published to the compacted metrics topics, then purged past its
    retention, gets a tombstone on each topic that carries it (its key, no value), so the
    topic forgets it as the store did; the rows kept (1h, all time) get none."""
    monkeypatch.setattr(runner, "EXPIRE_EVERY", 0.0)  # every commit purges
    topic = new_topic(1, prefix="tombstones")
    settings = ConsumerSettings(
        kafka_bootstrap, topic=topic, group=f"g-{topic}", store_url=store_url,
        retention=Retention(minute=2 * 3600, hour=None), flush_interval=0.1,
    )  # fmt: skip
    publishers = {
        subj: MetricsTopicPublisher(kafka_bootstrap, f"{topic}-{subj}", value_subject=subj)
        for subj in ("metric_rows", "closure_metrics")
    }
    reader = open_store(store_url)

    def consumer() -> MetricsConsumer:
        def publish(report: Any) -> None:
            for p in publishers.values():
                p.publish_pending(made.store, [c.partition for c in report.partitions])

        made = MetricsConsumer(settings, on_commit=publish)
        return made

    def tombstoned() -> bool:  # every topic's mark past the purged rows
        return all(reader.purged_since(p.topic) == ([], reader.purged_since(p.topic)[1]) and
                   reader.purged_since(p.topic)[1] > 0 for p in publishers.values())  # fmt: skip

    try:
        produce_raw(
            kafka_bootstrap, topic, [record("created", "a1", 1, T0), record("closed", "a2", 1, T0 + 30)]
        )
        run_until(consumer(), lambda: reader.load_partition(topic, 0).next_offset == 2)
        produce_raw(kafka_bootstrap, topic, [record("closed", "b2", 2, T0 + 10 * DAY)])
        run_until(consumer(), tombstoned)
    finally:
        reader.close()
    minute = f"|1m|{T0}"
    for subj, p in publishers.items():
        records = [((m.key() or b"").decode(), m.value()) for m in read_topic(kafka_bootstrap, p.topic)]
        gone = {key for key, value in records if value is None}
        published = {key for key, value in records if value is not None}
        assert gone == {key for key in published if key.endswith(minute)}, subj
        assert {key.split("|")[0] for key in gone} == {"channel_type", "account"}, subj  # closures set
        assert f"channel_type|TELEGRAM|1h|{T0 - T0 % 3600}" in published - gone


def test_the_store_moves_past_a_poison_record_only_once_the_dlq_acknowledged_it(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(1, prefix="dlqack")
    poison = (b"p", b"not avro at all")
    produce_raw(kafka_bootstrap, topic, [record("closed", "a", 1, T0), poison, record("closed", "b", 2, T0)])
    url = f"sqlite:///{tmp_path / 'm.db'}"
    settings = ConsumerSettings(
        kafka_bootstrap, topic=topic, group=f"g-{topic}", store_url=url, flush_interval=0.1
    )

    failing = MetricsConsumer(settings)
    failing.dlq.producer = Producer(  # a DLQ producer whose records are never acknowledged
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 2000, "acks": "all"}
    )
    deadline = time.monotonic() + 60
    with pytest.raises(ConsumerError, match=r"did not acknowledge .*not committing past them"):
        failing.run(until=lambda _: time.monotonic() > deadline)
    assert failing.stats.dead_lettered == 1
    reader = open_store(url)
    try:
        state = reader.load_partition(topic, 0)
        assert state.next_offset is None or state.next_offset <= 1  # the poison record is at offset 1

        # a consumer whose DLQ works takes over from the store: the record reaches the DLQ,
        # then the store moves past it
        consume_past_the_poison(settings, reader, poison)
    finally:
        reader.close()


def test_the_dead_letter_topic_is_made_on_a_cluster_that_makes_none_on_first_use(
    local_broker: Callable[..., Any], tmp_path: Path
) -> None:
    """A secured or managed cluster creates no topic on first use
    (auto.create.topics.enable=false): the consumer makes its dead-letter topic before the
    first dead letter, instead of failing to deliver it and stopping at that record."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    broker = local_broker(extra_properties={"auto.create.topics.enable": "false"})
    bootstrap = broker.bootstrap_servers
    topic = "events"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures die with it
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    poison = (b"p", b"not avro at all")
    produce_raw(bootstrap, topic, [record("closed", "a", 1, T0), poison, record("closed", "b", 2, T0)])
    url = f"sqlite:///{tmp_path / 'm.db'}"
    settings = ConsumerSettings(bootstrap, topic=topic, group="g", store_url=url, flush_interval=0.1)
    reader = open_store(url)
    try:
        consume_past_the_poison(settings, reader, poison)
    finally:
        reader.close()


def consume_past_the_poison(settings: ConsumerSettings, reader: Any, poison: tuple[bytes, bytes]) -> None:
    """Run a consumer over [closed, poison, closed] in partition 0 until the store is past
    all three: both closures counted, the poison record in the dead-letter topic."""
    topic = settings.topic
    run_until(MetricsConsumer(settings), lambda: reader.load_partition(topic, 0).next_offset == 3)
    (row,) = reader.query("channel_type", "all")
    assert row.closures == 2
    dead = read_topic(settings.bootstrap_servers, settings.dlq_topic, expect=1)
    assert [(m.key(), m.value()) for m in dead] == [poison]


def read_topic(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30) -> list[Any]:
    """The topic's records from the start, once `expect` of them arrived (None: once none
    came for 5 s), or at `timeout`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    got: list[Any] = []
    deadline = idle = time.monotonic() + timeout
    try:
        while (expect is None or len(got) < expect) and time.monotonic() < min(deadline, idle):
            if msgs := [m for m in c.consume(100, 0.5) if m.error() is None]:
                got.extend(msgs)
                if expect is None:
                    idle = time.monotonic() + 5
    finally:
        c.close()
    return got
