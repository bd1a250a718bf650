"""Errors of the consumer group. `ConsumerError` is the root."""

from __future__ import annotations


class ConsumerError(Exception):
    """Root of every error raised by `consumer`."""


class ConfigError(ConsumerError):
    """A setting or flag that cannot work (bad store URL, bad window name...)."""


class StoreError(ConsumerError):
    """The store failed or holds something this version cannot read."""


class KafkaUnavailableError(ConsumerError):
    """Kafka did not answer (at start: the metrics topics cannot be checked). Transient."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached right now (refused, restarting, connection lost).

    Transient: retry the same call later; the store reconnects by itself. Whether a
    commit that failed this way landed is unknown until the retry, which skips it if so.
    """


class QueryError(ConsumerError):
    """A metrics query with a bad parameter; the message says which and why."""


class FencedError(StoreError):
    """Another consumer claimed these partitions since this one did: its writes are refused."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        super().__init__(
            f"partition(s) {partitions} are owned by a newer consumer (a higher ownership epoch): "
            "this consumer was fenced off and drops its state for them"
        )


class RefusedCommitError(ConsumerError):
    """A commit queued after one that failed: never written (it builds on the failed one)."""


class OutOfRangeEventError(ConsumerError):
    """A decoded event whose times cannot be stored (64-bit overflow): dead-lettered."""
