"""SQL generated from the metric registry, for both stores (one dialect object each).

The metric rows are keyed by (grouping, window, start, key, partition): only the owner of
a partition writes its rows, so the commits of different consumers never touch the same
row, and queries merge a row's partitions (counts and sums add, min/max take the least and
greatest, sketch bins add). A commit's facts (`consumer.fold.delta.FACT_FIELDS`) and
pre-aggregated partials (`Delta.lags`) are staged in temporary tables, folded into
per-minute (partials: per-hour) rows of each grouping, and rolled up into each window.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import orjson

from consumer.fold.delta import layout_of
from consumer.fold.registry import REGISTRY, Grouping, Kind, Metric, Registry


@dataclass(frozen=True)
class Dialect:
    name: str
    integer: str  # the column type of a 64-bit integer
    text: str  # of a key (PostgreSQL: byte order, as SQLite compares)
    #: the sketch bins live in the row as one blob (SQLite), else in the metric_bins table
    bins_in_rows: bool
    #: one INSERT ... ON CONFLICT DO UPDATE may update a row it inserted itself (SQLite; not
    #: PostgreSQL): a fine grouping's short windows can then take one upsert per fact
    per_fact_upserts: bool
    #: the driver's placeholder, and the function that finds a text in a text (1-based)
    mark: str = "?"
    position: str = "instr"

    def floor(self, col: str, size: int | None) -> str:
        """`col` floored to its window's start (both `%` truncate towards 0); 0 for all time."""
        if size is None:
            return "0"
        return f"({col} - (({col} % {size}) + {size}) % {size})"

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


SQLITE = Dialect("sqlite", "INTEGER", "TEXT", bins_in_rows=True, per_fact_upserts=True)
POSTGRES = Dialect(
    "postgresql",
    "BIGINT",
    'TEXT COLLATE "C"',
    bins_in_rows=False,
    per_fact_upserts=False,
    mark="%s",
    position="strpos",
)

ROW_KEY = ("by", "win", "start", "key", "partition")


@dataclass(frozen=True)
class Source:
    """Where a distribution's values live one per event, by event time: a row's min/max
    is recomputed from there after a retraction (the stores' RECHECK)."""

    table: str
    time: str  # the column of the event time


#: the distributions whose values a late event retracts, by name
RECHECKED = {
    "time_to_close": Source("closures", "closed_at"),
    "time_to_first_assignment": Source("first_assignments", "assigned_at"),
}
#: the facts are staged per grouping in rows of this many seconds (partials: their own size)
STAGED = 60


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
    bins = "bins BLOB,  -- the row's sketch bins (consumer.store.sqlite.bins)\n    " if d.bins_in_rows else ""
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
    `metrics` (None: every metric's)."""
    out = []
    for c in registry.columns_of(metrics):
        how = merge_of(c, registry)
        out.append(f"CAST(sum({c}) AS BIGINT)" if how == "sum" else f"{how}({c})")
    return ", ".join(out)


def _key_expr(g: Grouping, prefix: str = "") -> str:
    parts = [f"CAST({prefix}{dim} AS TEXT)" for dim in g.dimensions]
    return parts[0] if len(parts) == 1 else " || '|' || ".join(parts)


def _present(g: Grouping, registry: Registry) -> str:
    """The facts a grouping counts: those with a value for each of its optional dimensions."""
    optional = [d for d in g.dimensions if registry.dimension(d).optional]
    return " AND ".join(f"{d} IS NOT NULL" for d in optional) or "true"


def _type(registry: Registry, field: str, integer: str) -> str:
    """The SQL type of a fact field: a text dimension's is TEXT, the rest are integers."""
    for dim in registry.dimensions:
        if dim.name == field:
            return "TEXT" if dim.type is str else integer
    return integer


def staging(d: Dialect, registry: Registry = REGISTRY) -> list[str]:
    """Temporary tables: the commit's facts, partials, and per-grouping minute rows."""
    n = d.integer
    on_commit = " ON COMMIT DELETE ROWS" if d.name == "postgresql" else ""
    layout = layout_of(registry)
    fact_cols = ", ".join(f"{f} {_type(registry, f, n)}" for f in layout.fields)
    out = [f"CREATE TEMP TABLE IF NOT EXISTS cm_facts (part INTEGER, seq {n}, {fact_cols}){on_commit}"]
    bins_col = ", b BLOB" if d.bins_in_rows else ""
    for m in layout.partial_metrics:
        out.append(
            f"CREATE TEMP TABLE IF NOT EXISTS cm_partial_{m.column} (part INTEGER, seq {n}, "
            f"channel_type TEXT, h {n}, n {n}, s {n}, mx {n}{bins_col}){on_commit}"
        )
        if not d.bins_in_rows:
            out.append(
                f"CREATE TEMP TABLE IF NOT EXISTS cm_partial_{m.column}_bins (part INTEGER, "
                f"channel_type TEXT, h {n}, bin {n}, n {n}){on_commit}"
            )
    values = ", ".join(f"{c} {n}" for c in registry.value_columns)
    for g in registry.groupings:
        out.append(
            f"CREATE TEMP TABLE IF NOT EXISTS cm_g_{g.ident} (part INTEGER, seq {n}, k TEXT, m {n}, "
            f"src INTEGER, {values}{bins_col}){on_commit}"
        )
        if not d.bins_in_rows:
            out.append(
                f"CREATE TEMP TABLE IF NOT EXISTS cm_g_{g.ident}_bins (part INTEGER, k TEXT, m {n}, "
                f"src INTEGER, bin {n}, n {n}){on_commit}"
            )
    return out


def _fact_values(g: Grouping, registry: Registry) -> str:
    """A grouping's minute-row values from the staged facts."""
    out = []
    for m in registry.metrics:
        fact = m in layout_of(registry).fact_metrics and (m.groupings is None or g.name in m.groupings)
        if m.kind is Kind.COUNTER:
            out.append(f"sum({m.column})" if fact else "0")
        elif fact:
            c, cn = m.column, f"{m.column}_n"
            out.append(
                f"sum({cn}), coalesce(sum({cn} * {c}), 0), min(CASE WHEN {cn} > 0 THEN {c} END), "
                f"max(CASE WHEN {cn} > 0 THEN {c} END)"
            )
            out += [f"coalesce(sum({b}), 0)" for b in _buckets(m)]
        else:
            out.append(_none(m))
    return ", ".join(out)


def _none(m: Metric) -> str:
    """A distribution's columns holding nothing."""
    return ", ".join(("0", "0", "NULL", "NULL", *("0" for _ in m.bucket_columns)))


def _buckets(m: Metric) -> list[str]:
    """Each bucket's increment by one fact: its signed count where its value falls in the
    bucket (a retraction takes it back from the bucket of its old value)."""
    c, cn = m.column, f"{m.column}_n"
    out = []
    for _, _, lower, upper in m.bucket_columns:
        within = [
            f"{c} > {lower}" if lower is not None else "",
            f"{c} <= {upper}" if upper is not None else "",
        ]
        out.append(f"CASE WHEN {' AND '.join(w for w in within if w)} THEN {cn} ELSE 0 END")
    return out


def _partial_values(p: Metric, registry: Registry) -> str:
    out = []
    for m in registry.metrics:
        if m.kind is Kind.COUNTER:
            out.append("0")
        elif m is p:
            out.append(", ".join(("n, s, NULL, mx", *("0" for _ in m.bucket_columns))))
        else:
            out.append(_none(m))
    return ", ".join(out)


def _fact_bins(registry: Registry) -> tuple[str, str]:
    """(bin, n) of a fact's distribution value (a fact carries at most one), in the row's
    bin space (shifted by the metric's bin_base)."""
    dists = [m for m in layout_of(registry).fact_metrics if m.kind is Kind.DISTRIBUTION]
    bins = [f"CASE WHEN {m.column}_n <> 0 THEN {m.column}_bin + {m.bin_base} END" for m in dists]
    ns = [f"CASE WHEN {m.column}_n <> 0 THEN {m.column}_n END" for m in dists]
    if len(dists) == 1:
        return bins[0], ns[0]
    return f"coalesce({', '.join(bins)})", f"coalesce({', '.join(ns)})"


def _sources(g: Grouping, window: str, registry: Registry) -> list[int]:
    """Which staged sources hold metrics that count in (grouping, window): 0 the facts,
    i + 1 the i-th partial metric."""
    layout = layout_of(registry)
    srcs = []
    if any(m.counts_in(g.name, window) for m in layout.fact_metrics):
        srcs.append(0)
    srcs += [i + 1 for i, m in enumerate(layout.partial_metrics) if m.counts_in(g.name, window)]
    return srcs


def _rolled_values(g: Grouping, window: str, registry: Registry) -> str:
    out = []
    for m in registry.metrics:
        counts = m.counts_in(g.name, window)
        for c in m.columns:
            how = merge_of(c, registry)
            if not counts:
                out.append("0" if how == "sum" else "NULL")
            elif how == "sum":
                out.append(f"coalesce(sum({c}), 0)")
            else:
                out.append(f"{how}({c})")
    return ", ".join(out)


def _on_conflict(d: Dialect, registry: Registry) -> str:
    sets = ["seq = excluded.seq"]
    for c in registry.value_columns:
        how = merge_of(c, registry)
        if how == "sum":
            sets.append(f"{c} = r.{c} + excluded.{c}")
        elif how == "min":
            sets.append(f"{c} = {d.least(f'r.{c}', f'excluded.{c}')}")
        else:
            sets.append(f"{c} = {d.greatest(f'r.{c}', f'excluded.{c}')}")
    if d.bins_in_rows:
        sets.append("bins = bins_merge(r.bins, excluded.bins)")
    return f" ON CONFLICT ({', '.join(ROW_KEY)}) DO UPDATE SET " + ", ".join(sets)


#: windows whose rows a fine-grained grouping's facts each have to themselves, nearly
PER_FACT_WINDOWS = ("1m", "1h")


def _fine(d: Dialect, g: Grouping, registry: Registry, cols: str) -> list[str]:
    """A fine-grained grouping (`Grouping.fine`, no partials, `Dialect.per_fact_upserts`):
    its short windows' rows take one upsert per fact straight from the facts, its longer
    ones are grouped from the facts: no per-minute staging, which would sort every fact
    for little merging."""
    fbin, fn = _fact_bins(registry)
    key = _key_expr(g)
    out = []
    for window, size in registry.windows.items():
        if not g.keeps(window) or not any(
            m.counts_in(g.name, window) for m in layout_of(registry).fact_metrics
        ):
            continue
        s = d.floor("t", size)
        if window in PER_FACT_WINDOWS:
            values = _fact_row_values(g, window, registry)
            out.append(
                f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', {s}, {key}, part, "
                f"{values}, seq, bins_one({fbin}, {fn}) FROM cm_facts WHERE {_present(g, registry)}"
                + _on_conflict(d, registry)
            )
        else:
            values = _fact_values(g, registry)
            out.append(
                f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', {s} AS s, {key} AS k, "
                f"part, {values}, max(seq), bins_pack({fbin}, {fn}) FROM cm_facts "
                f"WHERE {_present(g, registry)} GROUP BY part, s, k" + _on_conflict(d, registry)
            )
    return out


def _fact_row_values(g: Grouping, window: str, registry: Registry) -> str:
    """One fact's values as a row's (the upsert adds up the facts of a row)."""
    out = []
    facts = layout_of(registry).fact_metrics
    for m in registry.metrics:
        counts = m in facts and m.counts_in(g.name, window)
        if m.kind is Kind.COUNTER:
            out.append(m.column if counts else "0")
        elif counts:
            c, cn = m.column, f"{m.column}_n"
            out.append(
                f"{cn}, coalesce({cn} * {c}, 0), "
                f"CASE WHEN {cn} > 0 THEN {c} END, CASE WHEN {cn} > 0 THEN {c} END"
            )
            out += [f"coalesce({b}, 0)" for b in _buckets(m)]
        else:
            out.append(_none(m))
    return ", ".join(out)


def aggregation(d: Dialect, registry: Registry = REGISTRY) -> list[str]:
    """The statements that add the staged facts and partials to metric_rows (and, without
    bins in the rows, metric_bins)."""
    out: list[str] = []
    cols = ", ".join((*ROW_KEY, *registry.value_columns, "seq", *(("bins",) if d.bins_in_rows else ())))
    fbin, fn = _fact_bins(registry)
    for g in registry.groupings:
        partials = layout_of(registry).partial_metrics
        has_partials = any(p.groupings is None or g.name in p.groupings for p in partials)
        if d.per_fact_upserts and g.fine and not has_partials:
            out += _fine(d, g, registry, cols)
            continue
        key = _key_expr(g)
        bins = f", bins_pack({fbin}, {fn})" if d.bins_in_rows else ""
        out.append(
            f"INSERT INTO cm_g_{g.ident} SELECT part, max(seq), {key} AS k, {d.floor('t', STAGED)} AS m, 0, "
            f"{_fact_values(g, registry)}{bins} FROM cm_facts WHERE {_present(g, registry)} "
            "GROUP BY part, k, m"
        )
        if not d.bins_in_rows:
            out.append(
                f"INSERT INTO cm_g_{g.ident}_bins SELECT part, {key} AS k, {d.floor('t', STAGED)} AS m, 0, "
                f"{fbin} AS bin, sum({fn}) FROM cm_facts WHERE {fn} IS NOT NULL AND {_present(g, registry)} "
                "GROUP BY part, k, m, bin"
            )
        for i, p in enumerate(layout_of(registry).partial_metrics):
            if p.groupings is not None and g.name not in p.groupings:
                continue
            pkey = _key_expr(g)
            pb = ", b" if d.bins_in_rows else ""
            out.append(
                f"INSERT INTO cm_g_{g.ident} SELECT part, seq, {pkey}, h, {i + 1}, "
                f"{_partial_values(p, registry)}{pb} FROM cm_partial_{p.column}"
            )
            if not d.bins_in_rows:
                out.append(  # partials' bins are in the row's bin space already (lag_bin_of)
                    f"INSERT INTO cm_g_{g.ident}_bins SELECT part, {pkey}, h, {i + 1}, bin, n "
                    f"FROM cm_partial_{p.column}_bins"
                )
        for window, size in registry.windows.items():
            srcs = _sources(g, window, registry) if g.keeps(window) else []
            if not srcs:
                continue
            s = d.floor("m", size)
            where = f"src IN ({', '.join(map(str, srcs))})"
            union = ", bins_union(b)" if d.bins_in_rows else ""
            if size == STAGED and len(srcs) == 1:  # the staged rows are this window's already
                values = ", ".join(
                    c if m.counts_in(g.name, window) else ("0" if merge_of(c, registry) == "sum" else "NULL")
                    for m in registry.metrics
                    for c in m.columns
                )
                out.append(
                    f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', m, k, part, "
                    f"{values}, seq{', b' if d.bins_in_rows else ''} FROM cm_g_{g.ident} "
                    f"WHERE {where}" + _on_conflict(d, registry)
                )
            else:
                out.append(
                    f"INSERT INTO metric_rows AS r ({cols}) SELECT '{g.name}', '{window}', {s} AS s, k, "
                    f"part, {_rolled_values(g, window, registry)}, max(seq){union} FROM cm_g_{g.ident} "
                    f"WHERE {where} GROUP BY part, s, k ORDER BY part, s, k" + _on_conflict(d, registry)
                )
            if not d.bins_in_rows:
                out.append(
                    f"INSERT INTO metric_bins AS b SELECT '{g.name}', '{window}', {s} AS s, k, part, bin, "
                    f"CAST(sum(n) AS BIGINT) FROM cm_g_{g.ident}_bins WHERE {where} GROUP BY part, s, k, bin "
                    "HAVING sum(n) <> 0 ORDER BY part, s, k, bin "
                    "ON CONFLICT (by, win, start, key, partition, bin) DO UPDATE SET n = b.n + excluded.n"
                )
    return out


def clear(d: Dialect, registry: Registry = REGISTRY) -> list[str]:
    """Empty the temporary tables (SQLite; PostgreSQL's empty themselves at commit)."""
    tables = ["cm_facts", *(f"cm_partial_{m.column}" for m in layout_of(registry).partial_metrics)]
    tables += [f"cm_g_{g.ident}" for g in registry.groupings]
    return [f"DELETE FROM temp.{t}" for t in tables]


def query(
    d: Dialect, where: str, mark: str, registry: Registry = REGISTRY, metrics: Collection[str] | None = None
) -> str:
    """A metrics query: rows merged over their partitions, in (start, key) order, with the
    columns of `metrics` (None: all)."""
    bins = ", bins_union(bins)" if d.bins_in_rows else ""
    return (
        f"SELECT key, start, {merged_columns(registry, metrics)}{bins} FROM metric_rows WHERE {where} "
        f"GROUP BY start, key ORDER BY start, key LIMIT {mark}"
    )


def rank_value(registry: Registry, name: str) -> str:
    """The SQL of a `Registry.rankable` value over a row's partitions (a KeyError for
    anything else); shares and means are NULL where their divisor is 0."""

    def per(num: str, den: str) -> str:
        return f"CAST(sum({num}) AS DOUBLE PRECISION) / NULLIF(sum({den}), 0)"

    if name not in registry.rankable or name == "key":
        raise KeyError(name)
    if "/" in name:
        a, b = name.split("/")
        return per(registry.metric(a).column, registry.metric(b).column)
    if "." in name:
        metric, stat = name.split(".")
        c = registry.metric(metric).column
        if stat == "mean":
            return per(f"{c}_sum", f"{c}_count")
        return f"{'sum' if stat in ('count', 'sum') else stat}({c}_{stat})"
    return f"sum({registry.metric(name).column})"


def key_order(registry: Registry, grouping: str) -> str:
    """A grouping's keys in their natural order: numerically for one integer dimension."""
    g = registry.grouping(grouping)
    if len(g.dimensions) == 1 and registry.dimension(g.dimensions[0]).type is int:
        return "CAST(key AS BIGINT)"
    return "key"


def ranked(registry: Registry, grouping: str, where: str, mark: str, value: str, descending: bool) -> str:
    """A page of rows ranked by a `Registry.rankable` value (ties: start, then key): their
    (key, start) in rank order, each with the count of all rows that match. NULL values
    (a share of nothing) rank below every number, as in the dashboard. Only the ranked value
    is merged over every matching row; the page's own values are read by `page` after it
    (a ranking of 10,000 accounts merged every metric's columns of all 10,000 before:
    ~4x the time, bench/results/query.md)."""
    keys = key_order(registry, grouping)
    if value == "key":
        order = f"{keys} {'DESC' if descending else 'ASC'}, start"
    else:
        nulls = "NULLS LAST" if descending else "NULLS FIRST"
        order = f"{rank_value(registry, value)} {'DESC' if descending else 'ASC'} {nulls}, start, {keys}"
    return (
        f"SELECT key, start, count(*) OVER () FROM metric_rows "
        f"WHERE {where} GROUP BY start, key ORDER BY {order} LIMIT {mark} OFFSET {mark}"
    )


def page(
    d: Dialect, registry: Registry, starts: Collection[int], metrics: Collection[str] | None = None
) -> str:
    """The merged values of a page of rows (a `ranked` page) at these window starts
    (integers, written into the SQL); its arguments: the grouping, the window and the keys
    (`Dialect.list_arg`). The primary key (by, win, start, key, ...) is a point per start
    and key."""
    return (
        f"SELECT key, start, {merged_columns(registry, metrics)} FROM metric_rows WHERE by = {d.mark} "
        f"AND win = {d.mark} AND {starts_in(starts)} AND {d.one_of('key')} GROUP BY start, key"
    )


def starts_in(starts: Collection[int]) -> str:
    """`start` one of these window starts, written into the SQL (integers: nothing to
    escape; a list the primary key seeks start by start); none: no row."""
    if not starts:
        return "0 = 1"
    return f"start IN ({', '.join(str(int(s)) for s in sorted(starts))})"


def key_filter(registry: Registry, grouping: str, key: str, mark: str) -> tuple[str, list[object]]:
    """The closures matching a row's key: one `dimension = value` per dimension of its
    grouping (the closures table has a column per dimension), values typed as declared."""
    g = registry.grouping(grouping)
    values = key.split("|") if len(g.dimensions) > 1 else [key]
    args: list[object] = [
        int(v) if registry.dimension(d).type is int else v for d, v in zip(g.dimensions, values, strict=True)
    ]
    return " AND ".join(f"{d} = {mark}" for d in g.dimensions), args


# -- the gauges (`Registry.gauges`): live counts, not windowed ---------------------------
# One row per (grouping, key, partition) in the `backlog` table, which commits add to
# (a conversation's contribution moves between keys, `consumer.fold.delta.gauge_rows`);
# only a partition's owner writes its rows, queries sum them. SQLite keeps one writer slot.


def backlog_table(d: Dialect, registry: Registry = REGISTRY) -> str | None:
    """The `backlog` table, or None when the registry has no gauges."""
    if not registry.gauges:
        return None
    cols = "".join(f"{g.column} {d.integer} NOT NULL, " for g in registry.gauges)
    return (
        f"CREATE TABLE IF NOT EXISTS backlog (by TEXT NOT NULL, key {d.text} NOT NULL, "
        f"partition INTEGER NOT NULL, {cols}PRIMARY KEY (by, key, partition))"
    )


def backlog_upsert(d: Dialect, registry: Registry = REGISTRY) -> tuple[str, str]:
    """The statements that add one partition's gauge changes to its rows and drop the rows
    left at 0. SQLite: ?1 a JSON array of [by, key, gauges...], ?2 the partition; PostgreSQL:
    arrays of by, key, partition and each gauge, then by, key and partition again."""
    cols = [g.column for g in registry.gauges]
    add = ", ".join(f"{c} = backlog.{c} + excluded.{c}" for c in cols)
    zero = " AND ".join(f"{c} = 0" for c in cols)
    if d is SQLITE:
        values = ", ".join(f"value->>{i + 2}" for i in range(len(cols)))
        return (
            f"INSERT INTO backlog SELECT value->>0, value->>1, ?2, {values} FROM json_each(?1) WHERE true "
            f"ON CONFLICT (by, key, partition) DO UPDATE SET {add}",
            f"DELETE FROM backlog WHERE partition = ?2 AND (by, key) IN "
            f"(SELECT value->>0, value->>1 FROM json_each(?1)) AND {zero}",
        )
    arrays = ", ".join(["%s::text[]", "%s::text[]", "%s::int[]", *(["%s::bigint[]"] * len(cols))])
    return (
        f"INSERT INTO backlog SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (by, key, partition) DO UPDATE SET {add}",
        "DELETE FROM backlog WHERE (by, key, partition) IN "
        f"(SELECT * FROM unnest(%s::text[], %s::text[], %s::int[])) AND {zero}",
    )


def backlog_query(d: Dialect, where: str, registry: Registry = REGISTRY) -> str:
    """A grouping's gauges summed over partitions, keys in order, those all 0 left out."""
    sums = [f"CAST(sum({g.column}) AS BIGINT)" for g in registry.gauges]
    nonzero = " OR ".join(f"sum({g.column}) <> 0" for g in registry.gauges)
    return (
        f"SELECT key, {', '.join(sums)} FROM backlog WHERE {where} GROUP BY key HAVING {nonzero} ORDER BY key"
    )
