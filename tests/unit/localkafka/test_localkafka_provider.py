"""Cluster selection of convmetrics.localkafka.provider, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from convmetrics.localkafka import provider


def test_configured_cluster_is_used_and_nothing_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(provider.BOOTSTRAP_ENV, "kafka-1:9092,kafka-2:9092")

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not start or probe anything")

    monkeypatch.setattr(provider, "docker_available", boom)
    monkeypatch.setattr(provider, "LocalBroker", boom)
    with provider.kafka_bootstrap() as cluster:
        assert cluster == provider.KafkaCluster("kafka-1:9092,kafka-2:9092", "external")


def test_no_docker_socket_means_no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    assert provider.docker_available() is False


def test_unreachable_docker_host_is_detected_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    started = time.monotonic()
    assert provider.docker_available(timeout=1) is False
    assert time.monotonic() - started < 5
