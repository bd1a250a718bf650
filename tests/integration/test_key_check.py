"""A producer refuses a topic whose events are keyed otherwise than `--key-by` says (a change
of key on a topic that holds events would split conversations between partitions): the
check itself, the gateway and `convmetrics produce`, against a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from test_gateway import GatewayProcess, post, read_at, seed
from test_gateway_lifecycle import run_produce

from producer.exceptions import KeyMismatchError
from producer.topics import check_key


def put(bootstrap: str, topic: str, *keyed: tuple[int, bytes]) -> None:
    """Records with these keys on these partitions (their values do not matter here)."""
    p = Producer({"bootstrap.servers": bootstrap})
    for partition, key in keyed:
        p.produce(topic, b"x", key, partition=partition)
    assert p.flush(30) == 0


def test_each_partitions_newest_key_decides(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(3)
    for key_by in ("account", "conversation"):  # an empty topic, a missing one: nothing to split
        check_key(kafka_bootstrap, topic, key_by)
        check_key(kafka_bootstrap, f"missing-{uuid.uuid4().hex[:8]}", key_by)
    # partition 0 was keyed by conversation before its newest record; partition 1 stays empty
    put(kafka_bootstrap, topic, (0, b"7:1"), (0, b"7"), (2, b"9"))
    check_key(kafka_bootstrap, topic, "account")
    with pytest.raises(KeyMismatchError, match=r"keyed by account .* Run with --key-by account"):
        check_key(kafka_bootstrap, topic, "conversation")
    put(kafka_bootstrap, topic, (2, b"9:4"))  # one partition's newest is enough
    with pytest.raises(KeyMismatchError, match="partition 2's newest key is '9:4'"):
        check_key(kafka_bootstrap, topic, "account")


def test_the_gateway_stays_not_ready_on_a_topic_keyed_otherwise_and_says_why(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(3)
    put(kafka_bootstrap, topic, (1, b"5:1"))  # keyed by conversation, as before 2026-12-06
    gw = GatewayProcess(kafka_bootstrap, topic, ready=False)  # keys by account (the default)
    try:
        deadline = time.monotonic() + 60
        while "keyed by conversation" not in gw.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Run with --key-by conversation" in gw.output()
        assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 503
        r = post(gw, seed())
        assert r.status_code == 503 and "keyed by conversation" in r.text, r.text
    finally:
        gw.stop()
    # with the topic's own key the gateway is ready and keeps to it
    gw = GatewayProcess(kafka_bootstrap, topic, "--key-by", "conversation")
    try:
        body = seed(account=5)
        r = post(gw, body)
        assert r.status_code == 202, r.text
        msg = read_at(kafka_bootstrap, topic, r.json()["partition"], r.json()["offset"])
        assert msg.key() == f"5:{body['data']['id']}".encode()
    finally:
        gw.stop()


def test_produce_refuses_a_topic_keyed_otherwise(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(3)
    put(kafka_bootstrap, topic, (0, b"5:1"))
    path = tmp_path / "export.json"
    path.write_text(json.dumps([seed()]))
    done = run_produce(path, kafka_bootstrap, topic)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Run with --key-by conversation" in done.stdout + done.stderr
    done = run_produce(path, kafka_bootstrap, topic, "--key-by", "conversation")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_demo_refuses_a_topic_keyed_otherwise_at_once_and_says_what_to_do(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A --data-dir (or a cluster) holding a topic from a release that keyed events by
    conversation: the demo says so before starting anything, instead of waiting for a
    gateway that stays not ready."""
    topic = new_topic(3)
    put(kafka_bootstrap, topic, (2, b"5:1"))
    run = subprocess.run(
        [sys.executable, "-m", "convmetrics", "demo", "--once", "--events", "10", "--topic", topic,
         "--data-dir", str(tmp_path / "demo"), "--bootstrap-servers", kafka_bootstrap],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    # an external cluster (--bootstrap-servers): another --data-dir would change nothing
    assert (
        f"topic {topic} holds events keyed by conversation and the demo's gateway keys them by account: "
        "run the demo with another --topic, or with CONVMETRICS_KEY_BY=conversation" in run.stderr
    ), run.stderr
    assert not (tmp_path / "demo" / "gateway.log").exists()  # refused before the gateway started
