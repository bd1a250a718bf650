"""What the consumer needs of a partition's fold (`Fold`: the reference one or the compiled
one), and a consumed batch folded into them (`apply_batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consumer.fold.delta import (
    Changes,
    ConvKey,
    Delta,
)
from consumer.fold.model import KINDS, Event, from_record


class Fold(Protocol):
    """What the consumer needs of a partition's fold: `PartitionFold` here, or the same
    compiled (`consumer.fold.native`)."""

    @property
    def partition(self) -> int: ...
    @property
    def delta(self) -> Delta: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def hot_count(self) -> int: ...

    watermark: int
    #: events later than this (unix s) are refused as out of range, as `check_range` refuses
    #: times it cannot count: the consumer sets its clock plus MAX_AHEAD_S before each batch
    ceiling: int

    def __len__(self) -> int: ...
    def apply(self, e: Event, /) -> bool: ...
    def take_changes(self, chunk: int = ...) -> tuple[Delta, Changes]: ...
    def expire(self, ttl: int, max_conversations: int | None = None) -> list[ConvKey]: ...
    def snapshot(self, chunk: int = 100_000) -> list[bytes]: ...
    def conversations(self) -> dict[ConvKey, str]: ...


class _Message(Protocol):  # what apply_batch reads of a confluent_kafka.Message
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


BatchResult = tuple[list[int], int, int, list[int]]
"""(events folded per kind, duplicates, ignored records, indices of undecodable records)"""


def apply_batch(
    folds: dict[int, Fold], msgs: Sequence[_Message], records: Sequence[object], offsets: dict[int, int]
) -> BatchResult:
    """Fold a consumed batch: `msgs[i]` decoded as `records[i]` (a dict, or the DecodeError
    of a poison record). Messages of a partition without a fold (revoked meanwhile) are
    skipped; `offsets[p]` becomes the offset after partition p's last message. Poison
    records (undecodable, or refused by `check_range`) come back as indices."""
    if len(msgs) != len(records):
        raise ValueError("apply_batch: as many records as messages, please")
    folded = [0] * len(KINDS)
    duplicates = ignored = 0
    dead: list[int] = []
    for i, (m, rec) in enumerate(zip(msgs, records, strict=True)):
        p: int = m.partition()  # type: ignore[assignment]  # set on every consumed message
        fold = folds.get(p)
        if fold is None:
            continue
        if isinstance(rec, dict):
            ev = from_record(rec)
            if ev is None:
                ignored += 1
            else:
                try:
                    applied = fold.apply(ev)
                except OverflowError:  # out of range: a poison record, like an undecodable one
                    dead.append(i)
                else:
                    if applied:
                        folded[ev.kind] += 1
                    else:
                        duplicates += 1
        else:
            dead.append(i)
        offsets[p] = m.offset() + 1  # type: ignore[operator]  # set on every consumed message
    return folded, duplicates, ignored, dead
