# The compiled fold (consumer/native/src/lib.rs): the same interface as consumer.fold.
from collections.abc import Sequence
from typing import Any

from consumer.fold import BatchResult, Changes, ConvKey, Delta
from consumer.fold.model import Event

class PartitionFold:
    watermark: int
    max_seen: int
    @property
    def partition(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def hot_count(self) -> int: ...
    @property
    def channel_names(self) -> int: ...
    @property
    def delta(self) -> Delta: ...  # a copy of the pending changes
    def __init__(
        self,
        partition: int,
        idle: dict[ConvKey, str] | None = None,
        watermark: int = 0,
        *,
        max_seen: int = 256,
        counters: list[tuple[list[int], str | None]] = ...,
        inbox_app: bool = True,
        first_close: int | None = None,
        ttfa: bool = False,
        gauges: bool = False,
    ) -> None: ...
    def __len__(self) -> int: ...
    def apply(self, e: Event, /) -> bool: ...
    def take_changes(self, chunk: int = ...) -> tuple[Delta, Changes]: ...
    def expire(self, ttl: int, max_conversations: int | None = None) -> list[ConvKey]: ...
    def snapshot(self, chunk: int = 100_000) -> list[bytes]: ...
    def conversations(self) -> dict[ConvKey, str]: ...

def apply_batch(
    folds: dict[int, PartitionFold],
    msgs: Sequence[object],
    records: Sequence[object],
    offsets: dict[int, int],
) -> BatchResult: ...

DIMENSIONS: list[str]
DISTRIBUTIONS: list[str]
MAX_COUNTERS: int

def configure(
    multiplier: float,
    offset: float,
    zero_bin: int,
    lag_base: int,
    delta_class: type[Delta],
    changes_class: type[Changes],
) -> None: ...
def event_hash(event_id: str) -> int: ...
def bin_of(seconds: int) -> int: ...
def install_sqlite_auto_extension(module: str) -> None: ...
def pack_rows(rows: list[Any], columns: int) -> bytes: ...

class Facts:
    """A commit's facts as the compiled rollup reads them (the compiled fold's
    `Delta.facts`, or packed facts decoded): a read-only sequence of fact tuples."""

    @property
    def width(self) -> int: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...

def unpack_facts(facts: bytes, count: int, width: int) -> Facts: ...
def rollup_rows(facts: list[Facts], t: int, target: tuple[Any, ...]) -> bytes: ...
def rollup_copy(
    facts: list[Facts], t: int, target: tuple[Any, ...], partition: int, seq: int
) -> tuple[bytes, bytes]: ...
