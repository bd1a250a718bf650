"""The session fixtures' container path for real: with an engine answering (and
CONVMETRICS_REQUIRE_DOCKER=1), Kafka and PostgreSQL are containers of the project's images,
started through testcontainers; tests/integration's end-to-end and fault tests then run
against them (deploy/container-test.sh runs those beside this suite)."""

from __future__ import annotations

from convmetrics.localkafka import container, provider
from support import postgres as pg_support
from support.compose import docker
from support.postgres import PostgresServer


def test_kafka_and_postgresql_are_containers_of_the_chosen_images(
    kafka_cluster: provider.KafkaCluster, postgres: PostgresServer
) -> None:
    assert kafka_cluster.kind == "testcontainers"
    assert postgres.kind == "docker"
    port = kafka_cluster.bootstrap_servers.rsplit(":", 1)[1]
    running = docker("ps", "--format", "{{.Image}} {{.Ports}}").splitlines()
    kafka = [line for line in running if f"127.0.0.1:{port}->" in line]
    want = container.choose_image(container.PROJECT_IMAGE, container.OFFICIAL_IMAGE, container.IMAGE_ENV)
    assert [line.split()[0] for line in kafka] == [want], running
    pg_port = postgres.url.rsplit(":", 1)[1].split("/")[0]
    pg = [line for line in running if f":{pg_port}->5432" in line]
    want = container.choose_image(pg_support.PROJECT_IMAGE, pg_support.OFFICIAL_IMAGE, pg_support.IMAGE_ENV)
    assert [line.split()[0] for line in pg] == [want], running
