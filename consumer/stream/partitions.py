"""A member's partitions: a partition's fold restored from the store, its pending changes
taken for a commit, and the member's counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumer.fold import ConvKey, Delta, Fold
from consumer.fold.native import FoldKind, choose
from consumer.store import Store
from consumer.stream.settings import ConsumerSettings


@dataclass
class Stats:
    """Counters since start, for logs, progress and the Prometheus exporter."""

    consumed: int = 0
    folded: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    fenced: int = 0
    commits: int = 0
    #: folded events by type (conversation.closed, ...); duplicates not included
    by_type: dict[str, int] = field(default_factory=dict)
    #: records behind the partition's high watermark, per assigned partition (refreshed every few s)
    lag: dict[int, int] = field(default_factory=dict)


def take_changes(
    fold: Fold, expire: tuple[int, int | None] | None
) -> tuple[Delta, dict[ConvKey, str], list[ConvKey]]:
    """A partition's pending delta and changed conversations, and, when `expire` is given
    (ttl, max conversations), the conversations it forgets now: their gauges are taken
    back in the same delta, so the commit that drops them drops their counts."""
    delta, changed = fold.take_changes()
    expired = fold.expire(*expire) if expire is not None else []
    if expired:
        delta.merge_gauges(fold.take_changes()[0])
    return delta, changed, expired


def new_fold(
    store: Store, topic: str, partition: int, s: ConsumerSettings, kind: FoldKind | None = None
) -> tuple[Fold, int | None]:
    """A partition's fold (`kind`, default `choose()`) restored from the store, and the
    offset to resume from."""
    state = store.load_partition(topic, partition)
    fold = (kind or choose()).new(
        partition,
        state.conversations,
        state.watermark,
        max_seen=s.dedupe_per_conversation,
        registry=store.registry,
    )
    return fold, state.next_offset
