"""One KRaft Kafka node in a container, through testcontainers (a test dependency).

The image is ``$CONVMETRICS_KAFKA_IMAGE``, else the project's own (``convmetrics/kafka``,
built offline by ``make images`` from the jars :mod:`convmetrics.localkafka.jars` pins) when
the engine has it, else the official ``apache/kafka``. Both read the same ``KAFKA_*``
variables (:func:`kraft_environment`), so the container is configured alike either way.
Clients on the host reach it at ``127.0.0.1:<free port>``, published to the container's
``EXTERNAL`` listener and advertised as such.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from convmetrics.localkafka.broker import pick_free_port
from convmetrics.localkafka.exceptions import ContainerStartError
from convmetrics.localkafka.jars import KAFKA_VERSION

IMAGE_ENV = "CONVMETRICS_KAFKA_IMAGE"
#: built by `make images` (deploy/kafka); preferred when the engine has it
PROJECT_IMAGE = f"convmetrics/kafka:{KAFKA_VERSION}"
OFFICIAL_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
#: the listener published to the host
EXTERNAL_PORT = 9094


def kraft_environment(host_port: int) -> dict[str, str]:
    """``KAFKA_*`` variables of a combined broker+controller node whose ``EXTERNAL`` listener
    is advertised as ``127.0.0.1:host_port`` (as the official image and deploy/kafka read them)."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_LISTENERS": f"INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:{EXTERNAL_PORT}",
        "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://localhost:9092,EXTERNAL://127.0.0.1:{host_port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "1",
    }


def choose_image(project: str, official: str, env: str) -> str:
    """``$env`` when set, else ``project`` when the engine has that image, else ``official``."""
    given = os.environ.get(env, "").strip()
    if given:
        return given
    import docker

    client = docker.from_env()
    try:
        client.images.get(project)
        return project
    except docker.errors.ImageNotFound:
        return official
    finally:
        client.close()


@contextlib.contextmanager
def kafka_container(image: str | None = None, *, start_timeout: float = 120.0) -> Iterator[str]:
    """Start a Kafka container; yield its ``bootstrap.servers``; remove it (and its data) on exit.

    Raises:
        ContainerStartError: the container exited, or did not answer metadata in time; the
            message carries the end of its log.
    """
    from testcontainers.core.container import DockerContainer

    image = image or choose_image(PROJECT_IMAGE, OFFICIAL_IMAGE, IMAGE_ENV)
    port = pick_free_port()
    container = DockerContainer(image).with_envs(**kraft_environment(port))
    # published on loopback only (with_bind_ports takes a port, and would publish on every
    # interface); docker-py reads (address, port)
    ports: dict[str, Any] = container.ports
    ports[f"{EXTERNAL_PORT}/tcp"] = ("127.0.0.1", port)
    with container:
        bootstrap = f"127.0.0.1:{port}"
        _wait_ready(container, image, bootstrap, start_timeout)
        yield bootstrap


def _wait_ready(container: Any, image: str, bootstrap: str, timeout: float) -> None:
    from confluent_kafka.admin import AdminClient

    # the published port accepts at once (docker-proxy); a metadata answer means the broker
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except Exception as exc:  # KafkaException: not up yet
            wrapped = container.get_wrapped_container()  # docker-py's Container
            wrapped.reload()
            if wrapped.status not in ("created", "running"):
                reason = f"the Kafka container ({image}) exited ({wrapped.status})"
            elif time.monotonic() > deadline:
                reason = f"the Kafka container ({image}) did not answer at {bootstrap} ({timeout:g} s: {exc})"
            else:
                time.sleep(0.2)
                continue
            logs = wrapped.logs(tail=40).decode("utf-8", errors="replace")
            raise ContainerStartError(f"{reason}\n--- last lines of its log ---\n{logs}") from None
