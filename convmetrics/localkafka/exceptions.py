"""Errors raised by :mod:`convmetrics.localkafka`; all derive from :class:`LocalKafkaError`."""

from __future__ import annotations


class LocalKafkaError(Exception):
    """Root of every error this package raises."""


class JavaNotFoundError(LocalKafkaError):
    """No ``java`` executable (17 or newer) was found on PATH or under ``JAVA_HOME``."""


class KafkaJarsError(LocalKafkaError):
    """The Kafka jars could not be found or downloaded."""


class BrokerStartError(LocalKafkaError):
    """The broker process exited or did not answer metadata requests in time.

    Attributes:
        command: The command line that was run.
        log_tail: The last lines of the broker log, for the operator to read.
    """

    def __init__(self, reason: str, *, command: list[str], log_tail: str) -> None:
        self.reason = reason
        self.command = list(command)
        self.log_tail = log_tail
        super().__init__(
            f"{reason}\ncommand: {' '.join(self.command)}\n--- last lines of the broker log ---\n{log_tail}"
        )


class ContainerStartError(LocalKafkaError):
    """A Kafka container (testcontainers) exited or did not answer in time, or a Docker
    engine was required (``CONVMETRICS_REQUIRE_DOCKER=1``) and none answered."""
