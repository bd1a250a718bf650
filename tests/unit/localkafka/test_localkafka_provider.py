"""Cluster selection of convmetrics.localkafka.provider, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from convmetrics.localkafka import container, provider
from convmetrics.localkafka.exceptions import ContainerStartError


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


def test_a_required_engine_that_does_not_answer_is_an_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(provider.BOOTSTRAP_ENV, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    monkeypatch.setenv(provider.REQUIRE_DOCKER_ENV, "1")

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not fall back to a local broker")

    monkeypatch.setattr(provider, "LocalBroker", boom)
    with pytest.raises(ContainerStartError, match=r"CONVMETRICS_REQUIRE_DOCKER=1.*docker\.sock"):  # noqa: SIM117
        with provider.kafka_bootstrap():
            pass


def test_without_the_requirement_a_missing_engine_means_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    monkeypatch.delenv(provider.REQUIRE_DOCKER_ENV, raising=False)
    assert provider.use_docker() is False


def test_the_container_advertises_its_published_port_on_loopback() -> None:
    env = container.kraft_environment(40123)
    assert "EXTERNAL://127.0.0.1:40123" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://:{container.EXTERNAL_PORT}" in env["KAFKA_LISTENERS"]
    # every listener named has a protocol, and the controller is one of them
    names = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    mapped = {item.split(":")[0] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
    assert names == mapped and env["KAFKA_CONTROLLER_LISTENER_NAMES"] in names


def test_a_configured_image_is_used_without_asking_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(container.IMAGE_ENV, "registry.example/kafka:4.1.1")
    assert container.choose_image("a", "b", container.IMAGE_ENV) == "registry.example/kafka:4.1.1"
