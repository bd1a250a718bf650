"""The PostgreSQL store's aggregation of a commit's facts, in SQL (as the SQLite store does).

A commit's facts (`consumer.fold.Fact`) and ingest-lag partials (`consumer.fold.Lags`)
go into temporary tables (one `unnest` each), and one `INSERT ... SELECT ... GROUP BY ...
ORDER BY ... ON CONFLICT DO UPDATE` per grouping and window adds them to `metric_rows`
and `metric_bins` on the server, in key order, so concurrent commits lock shared rows in
the same order. The Python side only reshapes lists into columns.
"""

from __future__ import annotations

from typing import Any

import psycopg

from consumer.fold import BY_ACCOUNT, BY_CHANNEL
from consumer.fold.windows import WINDOWS
from consumer.store.base import PartitionCommit

_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS cm_facts (
    ch text, acc bigint, t bigint, c bigint, o bigint, u bigint, tn bigint, ttc bigint, bin bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS cm_lags (ch text, h bigint, n bigint, s bigint, mx bigint)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS cm_lag_bins (ch text, h bigint, bin bigint, n bigint)
    ON COMMIT DELETE ROWS;
"""
_STAGE_FACTS = """
INSERT INTO cm_facts SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[],
    %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
"""
_STAGE_LAGS = """
INSERT INTO cm_lags SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
"""
_STAGE_LAG_BINS = (
    "INSERT INTO cm_lag_bins SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
)

_ON_ROW = """
ON CONFLICT (by, win, start, key) DO UPDATE SET
    seq = excluded.seq,
    lag_count = m.lag_count + excluded.lag_count,
    lag_sum = m.lag_sum + excluded.lag_sum,
    lag_max = greatest(m.lag_max, excluded.lag_max),
    closures = m.closures + excluded.closures,
    reopens = m.reopens + excluded.reopens,
    closed_unread = m.closed_unread + excluded.closed_unread,
    ttc_count = m.ttc_count + excluded.ttc_count,
    ttc_sum = m.ttc_sum + excluded.ttc_sum,
    ttc_min = least(m.ttc_min, excluded.ttc_min),
    ttc_max = greatest(m.ttc_max, excluded.ttc_max)
"""
_ON_BIN = " ON CONFLICT (by, win, start, key, bin) DO UPDATE SET n = b.n + excluded.n"


def _floor(col: str, size: int | None) -> str:
    return "0" if size is None else f"({col} - mod(mod({col}, {size}) + {size}, {size}))"


def _statements() -> list[str]:
    """Rows (parameter: the commit's seq) and bins, by the rules of `consumer.fold.Fact`."""
    out = []
    ttc = (
        "c, o, u, tn, tn * ttc AS ts, CASE WHEN tn > 0 THEN ttc END AS mn, "
        "CASE WHEN tn > 0 THEN ttc END AS mx, 0 AS lc, 0 AS ls, NULL::bigint AS lm"
    )
    for by, key in ((BY_CHANNEL, "ch"), (BY_ACCOUNT, "acc::text")):
        for win, size in WINDOWS.items():
            source = f"SELECT {key} AS k, {_floor('t', size)} AS s, {ttc} FROM cm_facts"
            if by == BY_CHANNEL and win != "1m":  # ingest lag: the channel type's 1h, 1d and all rows
                lags = f"SELECT ch, {_floor('h', size)}, 0, 0, 0, 0, 0, NULL, NULL, n, s, mx FROM cm_lags"
                source += " UNION ALL " + lags
            out.append(
                f"INSERT INTO metric_rows AS m SELECT '{by}', '{win}', s, k, sum(c)::bigint, sum(o)::bigint, "
                "sum(u)::bigint, sum(tn)::bigint, coalesce(sum(ts), 0)::bigint, min(mn), max(mx), "
                "sum(lc)::bigint, coalesce(sum(ls), 0)::bigint, max(lm), %(seq)s::bigint "
                f"FROM ({source}) AS f GROUP BY s, k ORDER BY s, k" + _ON_ROW
            )
            bins = f"SELECT {key} AS k, {_floor('t', size)} AS s, bin, tn AS n FROM cm_facts WHERE tn <> 0"
            if by == BY_CHANNEL and win != "1m":
                bins += f" UNION ALL SELECT ch, {_floor('h', size)}, bin, n FROM cm_lag_bins"
            out.append(
                f"INSERT INTO metric_bins AS b SELECT '{by}', '{win}', s, k, bin, sum(n)::bigint "
                f"FROM ({bins}) AS f GROUP BY s, k, bin HAVING sum(n) <> 0 ORDER BY s, k, bin" + _ON_BIN
            )
    return out


_AGGREGATE = _statements()


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values as `width` lists, the shape `unnest` takes."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def aggregate(conn: psycopg.Connection[Any], partitions: list[PartitionCommit], seq: int) -> bool:
    """Add the partitions' facts and lags to the metric tables; False when there were none."""
    facts = [f for p in partitions for f in p.delta.facts]
    lags = [(ch, h, n, s, mx) for p in partitions for (ch, h), (n, s, mx, _) in p.delta.lags.items()]
    if not facts and not lags:
        return False
    lag_bins = [
        (ch, h, b, n)
        for p in partitions
        for (ch, h), (*_, bins) in p.delta.lags.items()
        for b, n in bins.items()
    ]
    conn.execute(_TEMP)
    if facts:
        conn.execute(_STAGE_FACTS, columns(facts, 9))
    if lags:
        conn.execute(_STAGE_LAGS, columns(lags, 5))
        conn.execute(_STAGE_LAG_BINS, columns(lag_bins, 4))
    for sql in _AGGREGATE:
        conn.execute(sql, {"seq": seq})
    return True
