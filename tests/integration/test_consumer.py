"""The consumer group against a real broker: exact totals through duplicates, late events,
SIGKILL, rebalances and poison records (issue: consumer group)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from consumer.stream.dlq import H_ERROR, H_ERROR_TYPE, H_OFFSET, H_PARTITION, H_TOPIC
from convmetrics.generate import GenerateConfig, generate_webhooks
from schemas import conversation_codec
from support.gateway import free_port
from support.pipeline import (
    ConsumerProcess,
    compare_with_truth,
    produce_raw,
    produce_webhooks,
    wait_caught_up,
    wait_progress,
)
from support.truth import compute_truth


def stream(seed: int, events: int) -> list[dict[str, Any]]:
    cfg = GenerateConfig(
        seed=seed,
        events=events,
        accounts=40,
        conversations=max(events // 6, 10),
        duplicate_rate=0.05,
        late_rate=0.05,
        unknown_channel_rate=0.05,
        noise_rate=0.05,
        alt_time_field_rate=0.1,
        missing_time_rate=0.02,
    )
    return [dict(w) for w in generate_webhooks(cfg)]


def with_gateway_retries(webhooks: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A gateway retry after a lost acknowledgement puts the same event in the topic twice."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for w in webhooks:
        out.append(w)
        if rnd.random() < 0.03:
            out.append(w)
    return out


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def spawn(kafka_bootstrap: str) -> Iterator[Callable[..., ConsumerProcess]]:
    """Start `convmetrics consume` processes; every one is stopped at teardown, pass or fail."""
    procs: list[ConsumerProcess] = []

    def start(topic: str, store: Path, log: Path, **kwargs: Any) -> ConsumerProcess:
        proc = ConsumerProcess(kafka_bootstrap, topic, store, log, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(timeout=20)


def test_generated_stream_matches_truth(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    api_port: int,
    spawn: Callable[..., ConsumerProcess],
) -> None:
    webhooks = with_gateway_retries(stream(seed=11, events=30_000), seed=11)
    truth = compute_truth(webhooks)
    assert any(k[1] in ("WECHAT", "NEW_CHANNEL_X", "INSTAGRAM_DM", "KAKAOTALK") for k in truth)
    topic = new_topic(6, prefix="exact")
    produce_webhooks(kafka_bootstrap, topic, webhooks)
    store = tmp_path / "m.db"
    proc = spawn(topic, store, tmp_path / "c.log", http_port=api_port)
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        compare_with_truth(f"http://127.0.0.1:{api_port}", truth)
        # the same process exposes its own health for Prometheus
        families = {
            f.name: f
            for f in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{api_port}/metrics").text)
        }
        consumed = sum(
            s.value for s in families["convmetrics_consumer_records"].samples if s.name.endswith("_total")
        )
        assert consumed == len(webhooks) - sum(
            1 for w in webhooks if not w["event"].startswith("conversation.")
        )
        dups = sum(
            s.value for s in families["convmetrics_consumer_duplicates"].samples if s.name.endswith("_total")
        )
        assert dups > 0
        assert "convmetrics_consumer_store_transaction_seconds" in families
    finally:
        assert proc.stop() == 0, proc.tail()


def test_sigkill_mid_stream_neither_loses_nor_double_counts(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    api_port: int,
    spawn: Callable[..., ConsumerProcess],
) -> None:
    webhooks = with_gateway_retries(stream(seed=23, events=40_000), seed=23)
    truth = compute_truth(webhooks)
    topic = new_topic(6, prefix="sigkill")
    store, log = tmp_path / "m.db", tmp_path / "c.log"
    parts = [webhooks[i * len(webhooks) // 4 : (i + 1) * len(webhooks) // 4] for i in range(4)]
    produced = 0
    for part in parts[:3]:  # three crashes, each while records are still arriving
        produced += produce_webhooks(kafka_bootstrap, topic, part)
        proc = spawn(topic, store, log, extra=["--flush-events", "1000"])
        wait_progress(store, at_least=produced // 2)
        proc.kill()
    produce_webhooks(kafka_bootstrap, topic, parts[3])
    proc = spawn(topic, store, log, http_port=api_port)
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        compare_with_truth(f"http://127.0.0.1:{api_port}", truth)
    finally:
        proc.stop()


def test_two_consumers_rebalance_midway(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    api_port: int,
    spawn: Callable[..., ConsumerProcess],
) -> None:
    webhooks = with_gateway_retries(stream(seed=37, events=40_000), seed=37)
    truth = compute_truth(webhooks)
    topic = new_topic(6, prefix="rebalance")
    store = tmp_path / "m.db"
    half = len(webhooks) // 2
    produced = produce_webhooks(kafka_bootstrap, topic, webhooks[:half])
    a = spawn(topic, store, tmp_path / "a.log", extra=["--flush-events", "2000"])
    wait_progress(store, at_least=produced // 3)
    b = spawn(topic, store, tmp_path / "b.log", http_port=api_port)
    b.wait_log("assigned [(")  # b took partitions over from a, a flushed before letting them go
    a.wait_log("revoked")
    produce_webhooks(kafka_bootstrap, topic, webhooks[half:])
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [a, b])
        compare_with_truth(f"http://127.0.0.1:{api_port}", truth)
        # and when a leaves, b takes everything over; numbers stay exact
        assert a.stop() == 0
        more = stream(seed=38, events=3_000)
        produce_webhooks(kafka_bootstrap, topic, more)
        wait_caught_up(kafka_bootstrap, topic, store, [b])
        compare_with_truth(f"http://127.0.0.1:{api_port}", compute_truth(webhooks + more))
    finally:
        a.stop()
        b.stop()


def test_poison_records_go_to_the_dlq_and_the_rest_still_counts(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    api_port: int,
    spawn: Callable[..., ConsumerProcess],
) -> None:
    webhooks = stream(seed=41, events=5_000)
    truth = compute_truth(webhooks)
    topic = new_topic(3, prefix="poison")
    good = conversation_codec().encode(
        {
            "event": "conversation.closed",
            "id": "x",
            "account": 1,
            "app": 1,
            "createdAt": 1,
            "deliveryAttempts": 1,
            "data": {"id": 1, "channelType": "TELEGRAM"},
        }
    )
    poison = [
        (b"k1", b"not avro at all"),
        (b"k2", good[:20]),  # truncated
        (b"k3", good[:2] + bytes.fromhex("0102030405060708") + good[10:]),  # unknown fingerprint
    ]
    produce_webhooks(kafka_bootstrap, topic, webhooks[: len(webhooks) // 2])
    produce_raw(kafka_bootstrap, topic, poison)
    produce_webhooks(kafka_bootstrap, topic, webhooks[len(webhooks) // 2 :])
    store = tmp_path / "m.db"
    proc = spawn(topic, store, tmp_path / "c.log", http_port=api_port)
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        compare_with_truth(f"http://127.0.0.1:{api_port}", truth)

        dead = read_all(kafka_bootstrap, f"{topic}.dlq", expect=3)
        assert sorted((m.key(), m.value()) for m in dead) == sorted(poison)
        kinds = set()
        for m in dead:
            h = dict(m.headers() or [])
            assert h[H_TOPIC] == topic.encode()
            assert int(h[H_PARTITION]) in range(3) and int(h[H_OFFSET]) >= 0
            kinds.add(h[H_ERROR_TYPE])
        assert kinds == {b"BadMagicError", b"TruncatedRecordError", b"UnknownFingerprintError"}

        # `convmetrics dlq replay` sends them back where they came from, original headers
        # only, while the consumer still refuses them: it dead-letters them again, and the
        # replay stops at the DLQ's end as it was at the start (it chased them, copying
        # them over and over, until its idle timeout that never came)
        out = subprocess.run(
            [sys.executable, "-m", "convmetrics", "dlq", "replay", "--bootstrap-servers", kafka_bootstrap,
             "--topic", topic, "--idle-timeout", "600"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "replayed 3 record(s)" in out.stdout
        assert "replaying 3 record(s)" in out.stderr
        again = read_all(kafka_bootstrap, f"{topic}.dlq", expect=6)
        assert sorted((m.key(), m.value()) for m in again) == sorted(poison + poison)
    finally:
        proc.stop()
    tail = read_all(kafka_bootstrap, topic, expect=None)
    replayed = [(m.key(), m.value()) for m in tail if (m.key(), m.value()) in poison]
    assert sorted(replayed) == sorted(poison + poison)  # the originals and the replayed copies


def test_an_event_dated_years_ahead_is_dead_lettered_and_moves_no_watermark(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    api_port: int,
    spawn: Callable[..., ConsumerProcess],
) -> None:
    """One event from a sender whose clock is years ahead: had it counted, the watermark
    (which retention purges and idle conversations expire by) would jump there and empty
    every window below it. It goes to the DLQ saying why; the rest counts exactly."""
    import sqlite3

    webhooks = stream(seed=43, events=3_000)
    topic = new_topic(3, prefix="ahead")
    ahead = int(time.time()) + 7 * 86_400
    value = conversation_codec().encode(
        {
            "event": "conversation.closed",
            "id": "from-the-future",
            "account": 1,
            "app": 1,
            "createdAt": ahead,
            "deliveryAttempts": 1,
            "data": {"id": 1, "channelType": "TELEGRAM", "closedAt": ahead},
        }
    )
    produce_webhooks(kafka_bootstrap, topic, webhooks[:1_500])
    produce_raw(kafka_bootstrap, topic, [(b"1", value)])
    produce_webhooks(kafka_bootstrap, topic, webhooks[1_500:])
    store = tmp_path / "m.db"
    proc = spawn(topic, store, tmp_path / "c.log", http_port=api_port)
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        compare_with_truth(f"http://127.0.0.1:{api_port}", compute_truth(webhooks))
        (dead,) = read_all(kafka_bootstrap, f"{topic}.dlq", expect=1)
        error = dict(dead.headers() or [])[H_ERROR].decode()
        assert "is more than 1 day after the consumer's clock" in error, error
        with sqlite3.connect(store) as db:
            (newest,) = db.execute("SELECT max(watermark) FROM offsets").fetchone()
        assert newest < time.time()  # the stream's own times (2023), not the future event's
    finally:
        proc.stop()


def read_all(bootstrap: str, topic: str, expect: int | None) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got: list[Any] = []
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < 5:
            msgs = [m for m in c.consume(1000, 0.5) if m.error() is None]
            if msgs:
                got.extend(msgs)
                idle_since = time.monotonic()
            if expect is not None and len(got) >= expect:
                break
    finally:
        c.close()
    return got


def test_dlq_replay_keeps_what_the_source_topic_refuses(kafka_bootstrap: str) -> None:
    """A replayed record the source topic refuses (here: larger than it takes; under ACLs,
    a topic the replayer may not write) is a delivery error, not an acknowledgement: the
    replay fails naming it and commits nothing, so the next replay still has the record."""
    import uuid

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from consumer.exceptions import ConsumerError
    from consumer.stream.replay import replay_dead_letters

    source = f"small-source-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = [NewTopic(source, 1, 1, config={"max.message.bytes": "64"}), NewTopic(f"{source}.dlq", 1, 1)]
    for future in admin.create_topics(topics).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    headers = [(H_TOPIC, source.encode()), (H_PARTITION, b"0"), (H_OFFSET, b"7")]
    producer.produce(f"{source}.dlq", key=b"42", value=b"x" * 500, headers=headers)
    assert producer.flush(30) == 0
    for _ in range(2):  # nothing committed: the second replay meets the record again
        with pytest.raises(ConsumerError, match=r"the source topic refused 1 replayed record\(s\)"):
            replay_dead_letters(kafka_bootstrap, source, group=f"replay-{source}", idle_timeout=10)


def test_a_member_on_another_store_than_its_groups_says_so_at_assignment(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    spawn: Callable[..., ConsumerProcess],
) -> None:
    """A consumer of the group restarted on its own store takes its partitions back quietly;
    one of the same group on another SQLite file (a container each, no shared store) is
    told, for each partition the group committed past its store, that its metrics miss
    what the other store folded."""
    topic = new_topic(3, prefix="two-stores")
    produce_webhooks(kafka_bootstrap, topic, stream(seed=31, events=3_000))
    first, other = tmp_path / "first.db", tmp_path / "other.db"
    for store, log in ((first, tmp_path / "a.log"), (first, tmp_path / "b.log"), (other, tmp_path / "c.log")):
        proc = spawn(topic, store, log, group=f"one-group-{topic}", extra=["--flush-events", "500"])
        try:
            wait_caught_up(kafka_bootstrap, topic, store, [proc])
            proc.wait_log("assigned [(")
        finally:
            assert proc.stop() == 0, proc.tail()
    said = [(tmp_path / name).read_text(errors="replace") for name in ("a.log", "b.log", "c.log")]
    assert "past this store's" not in said[0] and "past this store's" not in said[1], said[1]
    (line,) = [line for line in said[2].splitlines() if "past this store's" in line]
    assert " WARNING consumer.stream.runner: partition(s) 0 (group " in line, line
    assert all(f"{p} (group " in line and ", store none)" in line for p in range(3)), line
