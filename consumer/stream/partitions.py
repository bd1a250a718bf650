"""A member's partitions: a partition's fold restored from the store, its pending changes
taken for a commit, when its conversations are snapshotted, and the member's counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumer.fold import CHUNK, Changes, ConvKey, Delta, Fold
from consumer.fold.model import KINDS
from consumer.fold.native import FoldKind, choose
from consumer.store import Store
from consumer.stream.settings import ConsumerSettings

_KIND_NAMES = {kind: name for name, kind in KINDS.items()}


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

    def count(self, folded: list[int], duplicates: int, ignored: int, consumed: int) -> None:
        """Count a batch: its events folded per kind (`KINDS`' numbers), duplicates, ignored
        records and records consumed."""
        for kind, n in enumerate(folded):
            if n:
                name = _KIND_NAMES[kind]
                self.by_type[name] = self.by_type.get(name, 0) + n
        self.folded += sum(folded)
        self.duplicates += duplicates
        self.ignored += ignored
        self.consumed += consumed


def take_changes(fold: Fold, expire: tuple[int, int | None] | None) -> tuple[Delta, Changes, list[ConvKey]]:
    """A partition's pending delta and changed conversations, and, when `expire` is given
    (ttl, max conversations), the conversations it forgets now: their gauges are taken
    back in the same delta, so the commit that drops them drops their counts."""
    delta, changed = fold.take_changes(CHUNK)
    expired = fold.expire(*expire) if expire is not None else []
    if expired:
        delta.merge_gauges(fold.take_changes()[0])
    return delta, changed, expired


class Snapshots:
    """When a partition's conversations are snapshotted, for a store that keeps them as a log
    of each commit's changes plus snapshots (`Store.wants_snapshots`; `enabled`)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        #: conversation records logged since the partition's last snapshot
        self.logged: dict[int, int] = {}

    def take(self, p: int, fold: Fold, records: int, first: bool) -> list[bytes] | None:
        """Partition p's snapshot if one is due once its commit logs `records` more, else
        None. One is due once the log since the last holds as many records as the partition
        has conversations (so a restart replays at most twice the state, and each state is
        written ~twice); it waits for a later commit unless it is the commit's `first`:
        partitions that grow alike come due together, and all their snapshots held at once
        were the consumer's peak memory."""
        if not self.enabled:
            return None
        logged = self.logged[p] = self.logged.get(p, 0) + records
        if not first or logged < max(len(fold), 10_000):
            return None
        self.logged[p] = 0
        return fold.snapshot(CHUNK)  # a row of its own per chunk in the store


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


def ahead_of_the_store(starts: dict[int, int | None], group: dict[int, int]) -> str | None:
    """What to warn of where the group's committed offsets in Kafka are past the store's
    (`starts`: the store's next offset per assigned partition, None for none; `group`: the
    group's committed offsets, only the partitions that have one). Kafka's offsets are
    committed after the store's, so they never pass them while every member of a group
    writes one store: past it, another store holds those events (members of one group on
    SQLite files of their own) or this one was replaced or restored from a backup."""
    ahead = [
        f"{p} (group {group[p]:,}, store {'none' if start is None else f'{start:,}'})"
        for p, start in sorted(starts.items())
        if p in group and group[p] > (start or 0)
    ]
    if not ahead:
        return None
    return (
        f"partition(s) {', '.join(ahead)}: the consumer group's committed offset in Kafka is "
        "past this store's, so another store holds what this one lacks: every consumer of a "
        "group must write the same store (several machines or containers: PostgreSQL, not a "
        "SQLite file each), or this store was replaced or restored. This consumer folds from "
        "the store's offsets: its metrics lack what the other store folded"
    )
