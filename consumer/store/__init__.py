"""The store: what the consumer commits and what the API reads.

`base` is the interface (every backend implements `Store`), `sqlite/` and `postgres/` are
the backends, and `choose.open_store` picks one from a URL.
"""

from consumer.store.base import (
    LIVE,
    MetricRow,
    PartitionCommit,
    PartitionState,
    Retention,
    Store,
)
from consumer.store.choose import open_store

__all__ = ["LIVE", "MetricRow", "PartitionCommit", "PartitionState", "Retention", "Store", "open_store"]
