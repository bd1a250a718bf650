"""Pick a Kafka cluster for tests and demos: configured, Docker, or a local JVM broker.

Order: ``$CONVMETRICS_BOOTSTRAP_SERVERS`` (start nothing), then a container through
testcontainers when a Docker engine answers within ~2 s (:mod:`.container`: the project's
image or the official one), then :class:`~convmetrics.localkafka.broker.LocalBroker`.
``CONVMETRICS_REQUIRE_DOCKER=1`` (`make container-test`) makes a missing engine an error
instead of the fallback.
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
from convmetrics.localkafka.exceptions import ContainerStartError

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "CONVMETRICS_BOOTSTRAP_SERVERS"
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
#: "1": the container path or an error, never the local fallback (a container suite in CI)
REQUIRE_DOCKER_ENV = "CONVMETRICS_REQUIRE_DOCKER"

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


def docker_required() -> bool:
    """Whether a missing Docker engine is an error (``CONVMETRICS_REQUIRE_DOCKER=1``)."""
    return os.environ.get(REQUIRE_DOCKER_ENV) == "1"


def use_docker() -> bool:
    """Whether to start containers: an engine answers; or raise when one is required.

    Raises:
        ContainerStartError: ``CONVMETRICS_REQUIRE_DOCKER=1`` and no engine answers.
    """
    if docker_available():
        return True
    if docker_required():
        host = os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_DOCKER_SOCKET}")
        raise ContainerStartError(
            f"{REQUIRE_DOCKER_ENV}=1 but no Docker engine answers at {host}: "
            "`make engine` starts the project's own (docs/containers.md)"
        )
    return False


def _stderr_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def kafka_bootstrap() -> Iterator[KafkaCluster]:
    """Yield a reachable Kafka cluster, stopping anything started here on exit.

    Raises:
        LocalKafkaError: The local broker could not be started (no Java, no jars, ...), or
            the Kafka container (ContainerStartError).
    """
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        log.info("using the Kafka cluster at %s (%s)", external, BOOTSTRAP_ENV)
        yield KafkaCluster(external, "external")
        return
    if use_docker():
        from convmetrics.localkafka.container import kafka_container

        log.info("starting Kafka in a container (testcontainers)")
        with kafka_container() as bootstrap:
            yield KafkaCluster(bootstrap, "testcontainers")
        return
    log.info("no Docker engine: starting a local Kafka broker JVM")
    with LocalBroker(on_download=_stderr_notice) as broker:
        yield KafkaCluster(broker.bootstrap_servers, "local")
