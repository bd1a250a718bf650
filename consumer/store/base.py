"""The store interface: what the consumer commits and what the API reads.

The store is the source of truth for offsets: one `commit` writes metric deltas, the
changed conversations (with their dedupe memory) and each partition's next offset atomically, so a
crash lands either before or after a commit, never inside one. SQLite is the embedded
default; PostgreSQL is meant to drop in behind the same interface.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consumer.fold import Changes, ConvKey, Delta
from consumer.fold.registry import Metric, Registry
from consumer.fold.sketch import quantiles
from consumer.store.closure_list import ClosureListing, ListedClosure

#: What the metrics-topic publisher reads rows by (the same SQL on both stores). Each store
#: makes it at its first publication, not with its schema: kept up to date it costs every
#: commit an index update per changed row, which a store nobody publishes from skips; `seq`
#: (the partition's offset after the commit) is written either way, so the index finds
#: every row a partition changed since its last publication.
OUTBOX_INDEX_NAME = "metric_rows_by_partition_seq"
OUTBOX_INDEX = f"CREATE INDEX IF NOT EXISTS {OUTBOX_INDEX_NAME} ON metric_rows (partition, seq)"
#: the window of a gauge row in the outbox (`Store.changed_since`): the gauges are live
#: counts, not windowed; the metrics topic publishes them under this window
LIVE = "live"


@dataclass(frozen=True)
class Retention:
    """How long rows of each window size are kept, in seconds of event time (None: forever)."""

    minute: int | None = 2 * 86400
    hour: int | None = 90 * 86400
    day: int | None = None
    all: int | None = None

    def for_window(self, window: str) -> int | None:
        return {"1m": self.minute, "1h": self.hour, "1d": self.day, "all": self.all}[window]


@dataclass
class PartitionCommit:
    """What one partition contributes to a commit."""

    partition: int
    delta: Delta
    next_offset: int
    watermark: int
    conversations: Changes  # the changed ones, encoded (they carry the dedupe memory)
    expired: list[ConvKey] = field(default_factory=list)
    epoch: int = 0  # the ownership epoch this consumer claimed; a commit under an older one is refused
    #: every conversation of the partition (`PartitionFold.snapshot`), sent now and then to a
    #: store that keeps a log of changes plus snapshots (`wants_snapshots`): it may then keep
    #: the snapshot instead of `conversations` and `expired`, which it already holds
    snapshot: list[bytes] | None = None


@dataclass
class PartitionState:
    """What a consumer loads when it is assigned a partition."""

    next_offset: int | None  # None: never committed, start from the earliest offset
    watermark: int
    conversations: dict[ConvKey, str]


@dataclass(frozen=True)
class MetricRow:
    """One metric row, merged over its partitions: every registry column's value (counters;
    distributions' count, sum, min, max) and the sketch bins of its distributions."""

    by: str
    key: str
    window: str
    window_start: int
    values: dict[str, int | None]
    bins: tuple[tuple[int, int], ...] = ()

    def __getattr__(self, column: str) -> int | None:
        """A column's value by name (`row.closures`, `row.ttc_count`)."""
        try:
            return self.__dict__["values"][column]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(column) from None

    def quantiles(self, metric: Metric) -> tuple[float, ...] | None:
        """p50, p90, p99 of a distribution from its sketch bins (None when it has none)."""
        return quantiles(self.bins, base=metric.bin_base)


BacklogRow = tuple[str, int, int, int]
"""(key, open, unassigned, snoozed): a grouping's gauges summed over partitions"""


@dataclass(frozen=True)
class Ranking:
    """A page of rows ranked by a value (`Registry.rankable`), for tables such as the
    dashboard's accounts: the first `limit` rows from `offset` on, busiest first by default."""

    by: str
    window: str
    value: str
    descending: bool = True
    contains: str | None = None  # only rows whose key contains this text
    start_from: int | None = None
    start_to: int | None = None
    offset: int = 0
    limit: int = 100
    keys: tuple[str, ...] | None = None  # only rows of these keys
    #: the metrics the rows carry (`Registry.columns_of`; None: all the store holds); their
    #: sketch bins are read only if one of them is a distribution (`Registry.sketched`)
    metrics: tuple[str, ...] | None = None


class Store(Protocol):
    #: the metrics the store holds: its columns, and what readers render
    registry: Registry

    def check_topic(self, topic: str) -> None:
        """Note the events topic the store's metrics come from, or raise StoreError if it
        already holds another's (a store holds one topic's metrics)."""
        ...

    def check_metric_set(self, name: str, *, switch: bool = False) -> None:
        """Note the metric set (by name; its SLA buckets from `registry`) the store's
        consumers fold, or raise ConfigError if it notes another (`consumer.store.folded_set`);
        `switch`: note this one instead."""
        ...

    def check_format(self) -> None:
        """Raise StoreError if a newer release upgraded the store since it was opened
        (`consumer.store.store_format`): `/readyz` asks, so an older `serve` left running
        is taken out of its load balancer."""
        ...

    def claim(self, topic: str, partition: int, owner: str) -> int:
        """Become the partition's owner: bump and return its ownership epoch. Claim first,
        then load: from then on the previous owner's commits for it are refused."""
        ...

    def load_partition(self, topic: str, partition: int) -> PartitionState: ...

    def commit(self, topic: str, partitions: list[PartitionCommit]) -> None:
        """All of it in one transaction, or nothing; FencedError names the partitions
        whose epoch is no longer the newest (nothing is written then)."""
        ...

    def query(
        self,
        by: str,
        window: str,
        *,
        key: str | None = None,
        start_from: int | None = None,
        start_to: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 10_000,
        contains: str | None = None,
        keys: Sequence[str] | None = None,
        parts: Mapping[int, str] | None = None,
        metrics: Collection[str] | None = None,
    ) -> list[MetricRow]:
        """Rows merged over their partitions, in (start, key) order, with the values of
        `metrics` (None: every metric the store holds), and their sketch bins where one of
        those is a distribution (`Registry.sketched`; else `bins` is empty)."""
        ...

    def rank(self, ranking: Ranking) -> tuple[list[MetricRow], int]:
        """A page of ranked rows and how many rows match in all."""
        ...

    def newest_start(self, by: str, window: str) -> int | None:
        """The newest window start of (grouping, window) in the store (None: no row)."""
        ...

    def backlog(
        self, by: str, *, key: str | None = None, parts: Mapping[int, str] | None = None
    ) -> tuple[int | None, list[BacklogRow]]:
        """The gauges of a grouping's keys (those not all 0; one key, or the keys with these
        parts: `row_filter`), and the newest event time the store has seen (None: none)."""
        ...

    def closure_list(self, listing: ClosureListing) -> list[ListedClosure]:
        """An account's closures in a span, a page of them (`consumer.store.closure_list`)."""
        ...

    def purge(self) -> int: ...

    def changed_since(
        self, marks: dict[int, int], commits: int = 20
    ) -> tuple[list[MetricRow], dict[int, int]]:
        """The outbox of the metrics topic: the rows (merged over partitions) that the
        partitions of `marks` changed in up to `commits` commits each after their mark,
        then the gauges of the backlog keys they changed (rows of the window LIVE, zeros
        included), and the marks that covers."""
        ...

    def published_marks(self, partitions: list[int], topic: str = "") -> dict[int, int]:
        """How far publication to `topic` got, per partition (0: nothing published). Each
        metrics topic keeps its own marks."""
        ...

    def mark_published(self, marks: dict[int, int], topic: str = "") -> None: ...

    def purged_since(self, topic: str) -> tuple[list[tuple[str, str, int, str]], int]:
        """The (grouping, window, start, key) of rows purged past retention that `topic` has
        not tombstoned yet (a batch of them, `outbox.purged_keys`), and its mark after them."""
        ...

    def mark_purged_published(self, topic: str, mark: int) -> None:
        """`topic` tombstoned the purged rows up to `mark`."""
        ...

    def close(self) -> None: ...
