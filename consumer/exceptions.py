"""Errors of the consumer group. `ConsumerError` is the root."""

from __future__ import annotations


class ConsumerError(Exception):
    """Root of every error raised by `consumer`."""


class ConfigError(ConsumerError):
    """A setting or flag that cannot work (bad store URL, bad window name...)."""


class StoreError(ConsumerError):
    """The store failed or holds something this version cannot read."""


class QueryError(ConsumerError):
    """A metrics query with a bad parameter; the message says which and why."""
