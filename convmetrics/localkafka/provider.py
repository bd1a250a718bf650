"""Pick a Kafka cluster for tests and demos: configured, Docker, or a local JVM broker.

Order: ``$CONVMETRICS_BOOTSTRAP_SERVERS`` (start nothing), then testcontainers when a
Docker engine answers within ~2 s, then :class:`~convmetrics.localkafka.broker.LocalBroker`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

from convmetrics.localkafka.broker import LocalBroker

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "CONVMETRICS_BOOTSTRAP_SERVERS"
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"

ClusterKind = Literal["external", "testcontainers", "local"]


@dataclass(frozen=True)
class KafkaCluster:
    """Where clients connect, and what kind of cluster answers there."""

    bootstrap_servers: str
    kind: ClusterKind


def docker_available(timeout: float = 2.0) -> bool:
    """Return whether a Docker engine answers a ping within ``timeout`` seconds."""
    host = os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_DOCKER_SOCKET}")
    if host.startswith("unix://") and not os.path.exists(urlparse(host).path):
        return False
    try:
        import docker

        client = docker.from_env(timeout=max(1, int(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # any failure means: no usable engine
        log.debug("Docker engine not usable: %s", exc)
        return False


def _stderr_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def kafka_bootstrap() -> Iterator[KafkaCluster]:
    """Yield a reachable Kafka cluster, stopping anything started here on exit.

    Raises:
        LocalKafkaError: The local broker could not be started (no Java, no jars, ...).
    """
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        log.info("using the Kafka cluster at %s (%s)", external, BOOTSTRAP_ENV)
        yield KafkaCluster(external, "external")
        return
    if docker_available():
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # older testcontainers
            from testcontainers.kafka import KafkaContainer
        image = os.environ.get("CONVMETRICS_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0")
        log.info("starting Kafka in Docker (%s)", image)
        with KafkaContainer(image).with_kraft() as container:
            yield KafkaCluster(container.get_bootstrap_server(), "testcontainers")
        return
    log.info("no Docker engine: starting a local Kafka broker JVM")
    with LocalBroker(on_download=_stderr_notice) as broker:
        yield KafkaCluster(broker.bootstrap_servers, "local")
