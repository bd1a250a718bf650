"""The two SQL dialects, and the metric rows' table: its columns, how each merges over
partitions and commits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache

import orjson

from consumer.fold.registry import REGISTRY, Registry


@dataclass(frozen=True)
class Dialect:
    name: str
    integer: str  # the column type of a 64-bit integer
    text: str  # of a key (PostgreSQL: byte order, as SQLite compares)
    #: a row's sketch bins: one blob (SQLite, merged by the store's own SQL functions:
    #: consumer.store.sqlite.bins), else two arrays, `bin_ids` and `bin_ns` (PostgreSQL, merged
    #: by `BINS_MERGE`)
    bins_blob: bool
    #: the driver's placeholder, and the function that finds a text in a text (1-based)
    mark: str = "?"
    position: str = "instr"

    def one_of(self, col: str) -> str:
        """`col` equal to one of a list given as one argument (`list_arg`): any length, where
        a mark per value meets the driver's limit on arguments."""
        if self.name == "postgresql":
            return f"{col} = ANY({self.mark})"
        return f"{col} IN (SELECT value FROM json_each({self.mark}))"

    def list_arg(self, values: Sequence[str]) -> object:
        """The argument of `one_of`."""
        return list(values) if self.name == "postgresql" else orjson.dumps(list(values)).decode()

    def least(self, a: str, b: str) -> str:
        if self.name == "postgresql":
            return f"least({a}, {b})"
        return f"min(coalesce({a}, {b}), coalesce({b}, {a}))"

    def greatest(self, a: str, b: str) -> str:
        if self.name == "postgresql":
            return f"greatest({a}, {b})"
        return f"max(coalesce({a}, {b}), coalesce({b}, {a}))"


SQLITE = Dialect("sqlite", "INTEGER", "TEXT", bins_blob=True)
POSTGRES = Dialect(
    "postgresql",
    "BIGINT",
    'TEXT COLLATE "C"',
    bins_blob=False,
    mark="%s",
    position="strpos",
)

ROW_KEY = ("by", "win", "start", "key", "partition")
#: PostgreSQL's upsert of a row's bins: the stored and the new (bin, n) pairs summed by bin,
#: those that cancel out left out, in bin order (both arrays NULL when none is left)
BINS_MERGE = (
    "(bin_ids, bin_ns) = (SELECT array_agg(b ORDER BY b), array_agg(n ORDER BY b) FROM ("
    "SELECT b, CAST(sum(n) AS BIGINT) AS n FROM unnest(r.bin_ids || excluded.bin_ids, "
    "r.bin_ns || excluded.bin_ns) AS u(b, n) GROUP BY b HAVING sum(n) <> 0) AS m)"
)


def merge_of(column: str, registry: Registry = REGISTRY) -> str:
    """How a column merges across partitions and commits: sum, min or max."""
    for m in registry.distributions:
        if column == f"{m.column}_min":
            return "min"
        if column == f"{m.column}_max":
            return "max"
    return "sum"


def row_table(d: Dialect, registry: Registry = REGISTRY) -> str:
    cols = ",\n    ".join(
        f"{c} {d.integer}" + ("" if merge_of(c, registry) != "sum" else " NOT NULL DEFAULT 0")
        for c in registry.value_columns
    )
    if d.bins_blob:
        bins = "bins BLOB,  -- the row's sketch bins (consumer.store.sqlite.bins)\n    "
    else:
        bins = f"bin_ids {d.integer}[], bin_ns {d.integer}[],  -- the row's sketch bins, by bin\n    "
    return f"""CREATE TABLE IF NOT EXISTS metric_rows (
    by TEXT NOT NULL, win TEXT NOT NULL, start {d.integer} NOT NULL, key {d.text} NOT NULL,
    partition INTEGER NOT NULL,  -- the Kafka partition whose events the row holds (-1: an older store's)
    {cols},
    seq {d.integer} NOT NULL,  -- the partition's offset after the commit that last changed the row
    {bins}PRIMARY KEY (by, win, start, key, partition))"""


def missing_columns(d: Dialect, have: set[str], registry: Registry = REGISTRY) -> list[str]:
    """ALTER TABLE statements for registry columns a store made before them lacks."""
    return [
        f"ALTER TABLE metric_rows ADD COLUMN {c} {d.integer}"
        + ("" if merge_of(c, registry) != "sum" else " NOT NULL DEFAULT 0")
        for c in registry.value_columns
        if c not in have
    ]


def merged_columns(registry: Registry = REGISTRY, metrics: Collection[str] | None = None) -> str:
    """The value columns of a row merged over its partitions (query side): those of
    `metrics` (None: every metric's). Made once per registry and metrics: the metrics
    topic reads a page per grouping, window and start of a commit (thousands)."""
    return _merged_columns(registry, None if metrics is None else tuple(metrics))


@cache
def _merged_columns(registry: Registry, metrics: tuple[str, ...] | None) -> str:
    out = []
    for c in registry.columns_of(metrics):
        how = merge_of(c, registry)
        out.append(f"CAST(sum({c}) AS BIGINT)" if how == "sum" else f"{how}({c})")
    return ", ".join(out)


def on_conflict(d: Dialect, registry: Registry) -> str:
    """The upsert of a metric row: its values merged into the stored row's (`merge_of`),
    its seq the commit's."""
    sets = ["seq = excluded.seq"]
    for c in registry.value_columns:
        how = merge_of(c, registry)
        if how == "sum":
            sets.append(f"{c} = r.{c} + excluded.{c}")
        elif how == "min":
            sets.append(f"{c} = {d.least(f'r.{c}', f'excluded.{c}')}")
        else:
            sets.append(f"{c} = {d.greatest(f'r.{c}', f'excluded.{c}')}")
    sets.append("bins = bins_merge(r.bins, excluded.bins)" if d.bins_blob else BINS_MERGE)
    return f" ON CONFLICT ({', '.join(ROW_KEY)}) DO UPDATE SET " + ", ".join(sets)
