"""Shared fixtures: a session Kafka cluster, dedicated restartable brokers, fresh topics.

The session cluster comes from :func:`convmetrics.localkafka.kafka_bootstrap`
(``$CONVMETRICS_BOOTSTRAP_SERVERS``, else Docker, else a local JVM broker). When none
can be had the fixture errors, so integration tests fail rather than skip.

``tests/containers/`` (the compose stack and the images on a real Docker engine) is
collected only with ``CONVMETRICS_CONTAINER_TESTS=1``: ``make container-test`` sets it, after
starting the engine and building the images; ``make test`` leaves it out.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convmetrics.localkafka import LocalBroker, provider
from support.pipeline import create_topic

CONTAINERS = Path(__file__).parent / "containers"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave tests/containers/ out unless ``CONVMETRICS_CONTAINER_TESTS=1``."""
    if os.environ.get("CONVMETRICS_CONTAINER_TESTS") == "1":
        return None
    return collection_path == CONTAINERS or CONTAINERS in collection_path.parents or None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/integration/`` as ``integration``."""
    for item in items:
        if "integration" in Path(str(item.path)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[provider.KafkaCluster]:
    """The session's Kafka cluster (``bootstrap_servers`` and ``kind``)."""
    with provider.kafka_bootstrap() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: provider.KafkaCluster) -> str:
    """``bootstrap.servers`` of the session's Kafka cluster."""
    return kafka_cluster.bootstrap_servers


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[Callable[..., LocalBroker]]:
    """Factory: start a dedicated :class:`LocalBroker` (own port, own data dir).

    Keyword arguments go to ``LocalBroker``; ``data_dir`` defaults to a fresh dir under
    ``tmp_path`` (kept by pytest, so ``broker.log`` can be read after a failure). The
    test may stop, kill and restart it; every broker is stopped at teardown.
    """
    brokers: list[LocalBroker] = []

    def start(**kwargs: Any) -> LocalBroker:
        kwargs.setdefault("data_dir", tmp_path / f"broker-{len(brokers)}")
        broker = LocalBroker(**kwargs)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.close()


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=1, prefix="test") -> name`` of a fresh topic.

    The topic exists with a leader for every partition when the call returns; topics
    are deleted (best effort) at teardown so a shared external cluster stays tidy.
    """
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def create(partitions: int = 1, *, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        created.append(name)
        return create_topic(kafka_bootstrap, name, partitions)

    yield create
    if created:
        with contextlib.suppress(Exception):
            for future in admin.delete_topics(created, operation_timeout=10).values():
                future.result(timeout=15)
