"""A real Kafka broker: the session cluster, restarts on a kept data dir, start failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from convmetrics.localkafka import BrokerStartError, LocalBroker

pytestmark = pytest.mark.integration

StartBroker = Callable[..., LocalBroker]


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for value in values:
        producer.produce(topic, value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert errors == []


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value() or b"")
    finally:
        consumer.close()
    return values


def test_session_cluster_answers_metadata(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(3)
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert meta.brokers
    assert len(meta.topics[topic].partitions) == 3


@pytest.mark.parametrize("halt", ["stop", "kill"])
def test_kept_data_dir_survives_restart(local_broker: StartBroker, tmp_path: Path, halt: str) -> None:
    broker = local_broker(data_dir=tmp_path / "kept")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic("kept", 2, 1)])["kept"].result(timeout=30)
    values = [f"record-{i}".encode() for i in range(5)]
    _produce(broker.bootstrap_servers, "kept", values)
    bootstrap = broker.bootstrap_servers

    getattr(broker, halt)()
    assert not broker.running
    broker.start()

    assert broker.bootstrap_servers == bootstrap
    assert sorted(_consume_all(bootstrap, "kept", len(values))) == values


def test_temp_data_dir_is_removed_on_close() -> None:
    with LocalBroker() as broker:
        data_dir = broker.data_dir
        assert (data_dir / "meta.properties").is_file()
    assert not data_dir.exists()


def test_taken_port_fails_with_log_tail(local_broker: StartBroker) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerStartError) as caught:
            local_broker(port=port, start_timeout=30)
    assert "already in use" in caught.value.log_tail
    assert "kafka.Kafka" in str(caught.value)
    assert caught.value.log_tail in str(caught.value)


def test_bogus_property_fails_with_log_tail(local_broker: StartBroker) -> None:
    with pytest.raises(BrokerStartError) as caught:
        local_broker(extra_properties={"num.partitions": "many"}, start_timeout=30)
    assert "num.partitions" in caught.value.log_tail
    assert caught.value.log_tail in str(caught.value)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_bootstrap_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "convmetrics", "broker", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("bootstrap servers: 127.0.0.1:"), line
        bootstrap = line.split(": ", 1)[1].strip()
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
        proc.send_signal(sig)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / ".kafka_cleanshutdown").exists()  # Kafka shut down gracefully
