"""What both stores share below their SQL: the WHERE clauses of metric and backlog queries
(in a store's dialect), rankings, and merged query tuples made into `MetricRow`s."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from consumer.fold.registry import REGISTRY, Registry
from consumer.store import sqlgen
from consumer.store.base import MetricRow, Ranking

Fetch = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def row_filter(
    by: str,
    window: str,
    *,
    key: str | None,
    start_from: int | None,
    start_to: int | None,
    after: tuple[int, str] | None,
    dialect: sqlgen.Dialect,
    registry: Registry,
    contains: str | None = None,
    keys: Sequence[str] | None = None,
    parts: Mapping[int, str] | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause of a metrics query in a store's dialect, and its arguments.
    `parts`: values of some of the key's dimensions, by position, counted from the first
    (0, 1, ...) or from the last (-1): `{0: "42"}` selects the keys of account 42 in an
    `account,channel_type` grouping, `{-1: "TELEGRAM"}` its Telegram keys (a last value may
    hold a `|`: `_parts_filter`). The window's length (its starts are multiples of it) lets
    a query of some keys over a span list the span's starts (`listed_starts`). The rows of
    a window a grouping derives (`sqlgen.rows_of`), where its first dimension leads its
    source's key too, have a filter on it also bound the source's key (`fkey`), which the
    primary key orders: one account's rows are a range of its source rows, not a scan of
    them."""
    mark, position = dialect.mark, dialect.position
    size = registry.windows.get(window)
    where = [f"by = {mark}", f"win = {mark}"]
    args: list[Any] = [by, window]
    narrowed = key is not None or keys is not None or (parts is not None and 0 in parts)
    starts = listed_starts(start_from, start_to, size) if narrowed else None
    if starts is not None:
        where.append(sqlgen.starts_in(starts))
        start_from = start_to = None
    clauses = (
        ("key = {}", key),
        (f"{position}(key, {{}}) > 0", contains),
        ("start >= {}", start_from),
        ("start < {}", start_to),
    )
    for clause, value in clauses:
        if value is not None:
            where.append(clause.format(mark))
            args.append(value)
    if keys is not None:  # only these keys (a token scoped to some accounts); none: no row
        where.append(f"key IN ({', '.join([mark] * len(keys))})" if keys else "0 = 1")
        args.extend(keys)
        bound, bounds = sqlgen.source_bounds(dialect, registry, by, window, keys)
        if bound:
            where.append(bound)
            args.extend(bounds)
    first = (parts or {}).get(0)
    if first is None and key is not None:
        first = registry.key_parts(by, key)[0]
    if first is not None and sqlgen.bounds_source(registry, by, window):
        # before the key's own terms: SQLite tests the terms no index serves in the order
        # written, and this one leaves out the other accounts' source rows before their
        # keys are projected
        bound, bounds = sqlgen.first_bounds(dialect, first)
        where.append(bound)
        args.extend(bounds)
    if parts:
        clause, values = _parts_filter(parts, dialect)
        where.append(clause)
        args.extend(values)
    if after is not None:  # the page after the cursor, in (window_start, key) order
        where.append(f"(start, key) > ({mark}, {mark})")
        args.extend(after)
    return " AND ".join(where), args


#: at most this many window starts are listed in a query instead of its span (a day of
#: 1-minute windows is 1,440)
MAX_LISTED_STARTS = 1_500


def listed_starts(start_from: int | None, start_to: int | None, size: int | None) -> list[int] | None:
    """The window starts in [start_from, start_to) of a window of `size` seconds, when the
    span is bounded and holds at most MAX_LISTED_STARTS of them; else None.

    Why: the rows' primary key is (by, win, start, key, partition), so a span of starts
    is one range in it and a key condition after it only filters: a query of one account's
    rows over a day of 1-hour windows read every account's rows of that day. A list of
    starts is a point per start instead, and the key condition a range under each
    (`bench/query.py`: `/v1/metrics` of one account)."""
    if start_from is None or start_to is None or not size:
        return None
    first = -(-start_from // size) * size  # the first multiple of size at or after start_from
    if first >= start_to:
        return []
    if (start_to - first - 1) // size + 1 > MAX_LISTED_STARTS:
        return None
    return list(range(first, start_to, size))


def backlog_filter(
    by: str, key: str | None, parts: Mapping[int, str] | None, dialect: sqlgen.Dialect
) -> tuple[str, list[Any]]:
    """The WHERE clause of a backlog query (`consumer.store.sqlgen.backlog_query`): a
    grouping, and one key or some key parts (`row_filter`)."""
    mark = dialect.mark
    where, args = [f"by = {mark}"], [by]
    if key is not None:
        where.append(f"key = {mark}")
        args.append(key)
    if parts:
        clause, values = _parts_filter(parts, dialect)
        where.append(clause)
        args.extend(values)
    return " AND ".join(where), args


def _parts_filter(parts: Mapping[int, str], dialect: sqlgen.Dialect) -> tuple[str, list[Any]]:
    """Keys whose first dimension (position 0) and last (-1) have these values: the first
    is a key range (`42|` up to `42}`: `}` follows `|`, so an index serves it), the last
    the end of the key (`|TELEGRAM`) whose `|` is the key's first: a last dimension may hold
    a `|` itself (a channel type `WEB|CHAT`, key `7|WEB|CHAT`), which `|CHAT` must not
    match. The first dimension never holds one (an id: `consumer.fold.registry`)."""
    mark, position = dialect.mark, dialect.position
    if set(parts) - {0, -1}:
        raise ValueError(f"a key part is its first (0) or last (-1) dimension, not {sorted(parts)}")
    clauses, values = [], []
    if 0 in parts:
        clauses.append(f"key >= {mark} AND key < {mark}")
        values += [parts[0] + "|", parts[0] + "}"]
    if -1 in parts:
        end = "|" + parts[-1]
        start = f"length(key) - {len(end) - 1}"  # where `end` starts in a key ending with it
        clauses.append(f"substr(key, {start}) = {mark} AND {position}(key, '|') = {start}")
        values.append(end)
    return "(" + " AND ".join(clauses) + ")", values


#: at most this many (start, key) points in a bins query of listed starts and keys; past
#: it, the rows' span of starts is read as a range of the primary key
LISTED_BIN_POINTS = 10_000


def bins_filter(
    registry: Registry, by: str, window: str, starts: Collection[int], keys: Collection[str]
) -> tuple[str, list[Any]]:
    """The query for the sketch bins of some rows, given by their window starts and keys
    (a store keeping them as arrays: PostgreSQL; SQLite merges its blobs in the rows' own
    query): a row (start, key, bins, counts) per start and key, its bins summed over the
    rows' partitions, sorted by bin. The starts are listed, so that the primary key (by,
    win, start, key, ...) is a point per start and key, as the rows' own query reads them
    (`listed_starts`); a range of starts read every key's rows in it (all the accounts' rows
    of a day for one account's). Each start and key's bins are summed apart (a small sort
    each): one sort of every bin of the page spilled to disk and cost more than the rest of
    the call (docs/performance.md)."""
    mark = sqlgen.POSTGRES.mark
    rows = sqlgen.rows_of(sqlgen.POSTGRES, registry, by, window)
    args: list[Any] = [by, window]
    if len(starts) * len(keys) <= LISTED_BIN_POINTS:
        span = sqlgen.starts_in(starts)
    else:
        span = f"start>={mark} AND start<={mark}"
        args += [min(starts), max(starts)]
    # the keys' source rows, ranges of their accounts' (`sqlgen.source_bounds`)
    keys_bound, bounds = sqlgen.source_bounds(sqlgen.POSTGRES, registry, by, window, keys)
    args += [list(keys), *bounds, by, window]
    bound = ""
    if bounds:  # each key's bins: the source rows of its first value, a range
        first = "split_part(g.key, '|', 1)"
        bound = f" AND r.fkey >= {first} || '|' AND r.fkey < {first} || '}}'"
    sql = (
        f"SELECT g.start, g.key, m.ids, m.ns FROM (SELECT DISTINCT start, key FROM {rows} "
        f"WHERE by={mark} AND win={mark} AND {span} AND key = ANY({mark}) AND "
        f"{keys_bound + ' AND ' if bounds else ''}bin_ids IS NOT NULL) AS g, "
        "LATERAL (SELECT array_agg(b ORDER BY b) AS ids, array_agg(n ORDER BY b) AS ns FROM ("
        "SELECT u.b, CAST(sum(u.n) AS BIGINT) AS n "
        f"FROM {sqlgen.rows_of(sqlgen.POSTGRES, registry, by, window, 'r')}, "
        "unnest(r.bin_ids, r.bin_ns) AS u(b, n) "
        f"WHERE r.by={mark} AND r.win={mark} AND r.start=g.start AND r.key=g.key{bound} "
        "GROUP BY u.b) AS s) AS m"
    )
    return sql, args


def newest_start(d: sqlgen.Dialect, registry: Registry, by: str, window: str) -> str:
    """The newest window start of (grouping, window): the primary key's order answers it at
    once (a derived window's: its source's rows it counts in, and its own rows of it)."""
    rows = sqlgen.rows_of(d, registry, by, window)
    return f"SELECT max(start) FROM {rows} WHERE by = {d.mark} AND win = {d.mark}"


#: a store's merged rows of (grouping, window) at some starts for a list of keys, with
#: their sketch bins, of the columns of some metrics (None: all), in no particular order
Page = Callable[[str, str, list[str], Collection[int], Collection[str] | None], list[MetricRow]]


def rank_rows(
    r: Ranking, registry: Registry, fetch: Fetch, page: Page, dialect: sqlgen.Dialect
) -> tuple[list[MetricRow], int]:
    """`Store.rank` for a SQL store: one query ranks the merged rows (and counts them), then
    only the page's rows are read, with their sketch bins."""
    where, args = row_filter(
        r.by,
        r.window,
        key=None,
        start_from=r.start_from,
        start_to=r.start_to,
        after=None,
        dialect=dialect,
        registry=registry,
        contains=r.contains,
        keys=r.keys,
    )
    ranking = sqlgen.ranked(dialect, registry, r.by, r.window, where, r.value, r.descending)
    found = fetch(ranking, (*args, r.limit, r.offset))
    if not found:  # past the end (or nothing at all): count what there is
        counted = fetch(
            f"SELECT count(*) FROM (SELECT 1 FROM {sqlgen.rows_of(dialect, registry, r.by, r.window)} "
            f"WHERE {where} GROUP BY start, key) g",
            tuple(args),
        )
        return [], int(counted[0][0])
    keys, starts = sorted({f[0] for f in found}), {f[1] for f in found}
    values = {(m.window_start, m.key): m for m in page(r.by, r.window, keys, starts, r.metrics)}
    # in rank order; a row purged between the two reads is left out
    rows = [values[(f[1], f[0])] for f in found if (f[1], f[0]) in values]
    return rows, int(found[0][-1])


def merge_rows(rows: Iterable[MetricRow], key: str, registry: Registry = REGISTRY) -> MetricRow:
    """Rows of one grouping and window merged into one under `key` (counts and sums add,
    min/max take the least and greatest, sketch bins add): exact, as across partitions."""
    rows = list(rows)
    values: dict[str, int | None] = {}
    for c in registry.value_columns:
        present = [v for r in rows if (v := r.values[c]) is not None]
        how = sqlgen.merge_of(c, registry)
        values[c] = (min if how == "min" else max)(present, default=None) if how != "sum" else sum(present)
    bins: dict[int, int] = defaultdict(int)
    for r in rows:
        for b, n in r.bins:
            bins[b] += n
    first = rows[0] if rows else None
    by, window, start = (first.by, first.window, first.window_start) if first else ("", "", 0)
    return MetricRow(by, key, window, start, values, tuple(sorted((b, n) for b, n in bins.items() if n)))


def build_rows(
    by: str,
    window: str,
    found: list[tuple[Any, ...]],
    bins: Iterable[tuple[int, str, list[int], list[int]]],
    registry: Registry = REGISTRY,
    metrics: Collection[str] | None = None,
) -> list[MetricRow]:
    """MetricRows from merged `query` tuples (key, start, values...: the columns of
    `metrics`) and their bins (`bins_filter`: start, key, bins, counts)."""
    # no bins at all (arrays stored empty, which the stores never write) sum to NULL
    sketches = {(start, k): list(zip(ids, ns, strict=True)) for start, k, ids, ns in bins if ids is not None}
    names = registry.columns_of(metrics)
    return [metric_row(by, window, r, sketches.get((r[1], r[0]), []), names) for r in found]


def metric_row(
    by: str, window: str, found: tuple[Any, ...], bins: Iterable[tuple[int, int]], names: Sequence[str]
) -> MetricRow:
    """A MetricRow from a merged `query` tuple (key, start, values...) whose values are the
    columns `names` (`Registry.columns_of`, worked out once per query), and its (bin, n) pairs."""
    values = dict(zip(names, found[2:], strict=True))
    return MetricRow(by, found[0], window, found[1], values, tuple(bins))
