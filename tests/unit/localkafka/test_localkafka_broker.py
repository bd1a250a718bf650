"""Pure helpers of convmetrics.localkafka.broker: no JVM, no broker."""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

import pytest

from convmetrics.localkafka import broker
from convmetrics.localkafka.exceptions import BrokerStartError, LocalKafkaError


def _parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_properties_describe_a_combined_kraft_node(tmp_path: Path) -> None:
    props = _parse(broker.render_server_properties(port=9192, controller_port=9193, data_dir=tmp_path))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9193"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9192"
    assert props["log.dirs"] == str(tmp_path)
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert "auto.create.topics.enable" not in props  # Kafka's default (true) stays
    # a restart after SIGKILL waits out the old broker session: keep it short
    assert int(props["broker.session.timeout.ms"]) < 9000
    assert int(props["broker.heartbeat.interval.ms"]) < int(props["broker.session.timeout.ms"])


def test_extra_properties_override_and_extend(tmp_path: Path) -> None:
    text = broker.render_server_properties(
        port=1,
        controller_port=2,
        data_dir=tmp_path,
        extra={"num.partitions": "3", "log.retention.ms": "1000"},
    )
    props = _parse(text)
    assert props["num.partitions"] == "3"
    assert props["log.retention.ms"] == "1000"
    assert text.count("num.partitions=") == 1


def test_cluster_id_is_22_char_urlsafe_base64_of_16_bytes() -> None:
    ids = {broker.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_cluster_id_never_starts_with_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr("convmetrics.localkafka.broker.uuid.uuid4", lambda: next(draws))
    assert broker.new_cluster_id() == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")


def test_picked_port_is_bindable() -> None:
    port = broker.pick_free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_broker_keeps_given_port_and_picks_distinct_controller_port(tmp_path: Path) -> None:
    b = broker.LocalBroker(port=45678, data_dir=tmp_path)
    assert b.bootstrap_servers == "127.0.0.1:45678"
    assert b.controller_port != 45678
    assert not b.running


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = broker.tail_lines(log, 40).splitlines()
    assert tail == [f"line {i}" for i in range(60, 100)]


def test_tail_survives_missing_file_and_bad_bytes(tmp_path: Path) -> None:
    assert "no log" in broker.tail_lines(tmp_path / "missing.log")
    log = tmp_path / "bad.log"
    log.write_bytes(b"ok\n\xff\xfe broken\n")
    assert broker.tail_lines(log).splitlines()[0] == "ok"


def test_start_error_carries_command_and_tail() -> None:
    err = BrokerStartError("broker exited", command=["java", "kafka.Kafka"], log_tail="boom")
    assert isinstance(err, LocalKafkaError)
    assert "java kafka.Kafka" in str(err) and "boom" in str(err)
    assert err.log_tail == "boom" and err.command == ["java", "kafka.Kafka"]


def test_close_removes_only_a_temp_data_dir(tmp_path: Path) -> None:
    owned = broker.LocalBroker()
    assert owned.data_dir.is_dir()
    owned.close()
    assert not owned.data_dir.exists()
    kept = broker.LocalBroker(data_dir=tmp_path)
    kept.close()
    assert tmp_path.is_dir()
