"""The rows of a derived grouping (`Grouping.derived_from`), read from its source's: each
source row's key projected onto the grouping's dimensions, in SQL both dialects run, as a
FROM item the queries of stored rows read unchanged (their `GROUP BY start, key` merges
the source rows of one projected key as it merges a row's partitions: exact)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import cache

from consumer.fold.registry import Registry
from consumer.store.sqlgen.dialect import Dialect

#: the table of stored metric rows
ROWS = "metric_rows"


@cache
def rows_of(d: Dialect, registry: Registry, by: str, window: str, alias: str = ROWS) -> str:
    """A grouping's metric rows of a window as a FROM item named `alias`: the table itself,
    or where the grouping derives the window (`Grouping.derives`) its source's rows as its
    rows (`by` its name, `key` projected; `fkey` the source's key, which the primary key
    orders: `rows.row_filter` bounds it). A grouping that keeps rows of its own in other
    windows (`account`) reads its own rows of this one too: a store folded by a metric set
    that stored them (`closures`) keeps them, and no commit writes both for one event."""
    g = registry.grouping(by)
    if not g.derives(window):
        return ROWS if alias == ROWS else f"{ROWS} AS {alias}"
    assert g.derived_from is not None
    src = registry.grouping(g.derived_from)
    parts = {dim: _part(d, src.dimensions, i) for i, dim in enumerate(src.dimensions)}
    key = " || '|' || ".join(parts[dim] for dim in g.dimensions)
    present = "".join(f" AND {parts[dim]} <> ''" for dim in g.dimensions if registry.dimension(dim).optional)
    bins = "bins" if d.bins_blob else "bin_ids, bin_ns"
    values = f"partition, seq, {', '.join(registry.value_columns)}, {bins}"
    derived = (
        f"SELECT {_quote(by)} AS by, win, start, {key} AS key, key AS fkey, {values} "
        f"FROM {ROWS} WHERE by = {_quote(src.name)}{present}"
    )
    if has_own_rows(registry, by):
        # its fkey `42|`: in the range of account 42's source keys (`first_bounds`), so that
        # one range bounds both (an OR of the two is no range SQLite seeks in the source's)
        own = f"SELECT by, win, start, key, key || '|' AS fkey, {values} FROM {ROWS} WHERE by = {_quote(by)}"
        derived = f"{own} UNION ALL {derived}"
    return f"({derived}) AS {alias}"


def has_own_rows(registry: Registry, by: str) -> bool:
    """Whether a derived grouping keeps rows of its own in some window (`Registry.stores`)."""
    g = registry.grouping(by)
    return g.derived_from is not None and any(registry.stores(g, w) for w in registry.windows)


def _part(d: Dialect, dims: tuple[str, ...], i: int) -> str:
    """The SQL of a source key's i-th value: the text after its i-th `|`, up to the next
    one; the last dimension's (the text one, which may hold a `|`) all that follows."""
    rest = "key"
    for _ in range(i):
        rest = f"substr({rest}, {d.position}({rest}, '|') + 1)"
    if i == len(dims) - 1:
        return rest
    return f"substr({rest}, 1, {d.position}({rest}, '|') - 1)"


def _quote(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def bounds_source(registry: Registry, by: str, window: str) -> bool:
    """Whether a grouping derives this window from a source whose key its first dimension
    leads too (`account,channel_type`, `inbox` and `account` from `source`, keyed by
    account, inbox, app and channel type): a filter on its first value then bounds the source's
    key (`fkey`), a range of the primary key."""
    g = registry.grouping(by)
    if not g.derives(window):
        return False
    assert g.derived_from is not None
    return registry.grouping(g.derived_from).dimensions[0] == g.dimensions[0]


def first_bounds(d: Dialect, first: str) -> tuple[str, list[str]]:
    """The condition that a derived row's source key (`fkey`) is one of the first value's:
    its source rows' range (`42|` up to `42}`: `}` follows `|`), which holds the
    grouping's own rows of the value too (`rows_of`: their fkey is `42|`)."""
    return f"fkey >= {d.mark} AND fkey < {d.mark}", [first + "|", first + "}"]


def source_bounds(
    d: Dialect, registry: Registry, by: str, window: str, keys: Collection[str]
) -> tuple[str, list[str]]:
    """A condition (or "": none needed) that a derived grouping's source rows lie in the
    ranges of these keys' first values (`bounds_source`), and its arguments: a list of a
    derived grouping's keys is a test of each source row's projected key, which no index
    serves, and the ranges of their accounts are (one range each, joined by OR)."""
    if not keys or not bounds_source(registry, by, window):
        return "", []
    firsts = sorted({registry.key_parts(by, k)[0] for k in keys})
    each = [first_bounds(d, first) for first in firsts]
    return any_of([cond for cond, _ in each]), [a for _, args in each for a in args]


def any_of(conditions: Sequence[str]) -> str:
    """The conditions joined by OR as a balanced tree, in their order (their placeholders'
    arguments keep theirs): SQLite refuses an expression more than 1,000 deep, and a chain
    of n ORs is n deep (a token of 1,000 accounts asks for 1,000 ranges)."""
    if len(conditions) == 1:
        return f"({conditions[0]})"
    half = len(conditions) // 2
    return f"({any_of(conditions[:half])} OR {any_of(conditions[half:])})"
