"""SQL generated from the metric registry, for both stores (one dialect object each).

The metric rows are keyed by (grouping, window, start, key, partition): only the owner of
a partition writes its rows, so the commits of different consumers never touch the same
row, and queries merge a row's partitions (counts and sums add, min/max take the least and
greatest, sketch bins add). A commit's facts and partials are rolled up into rows on the
client (consumer.store.rollup); the SQL here makes the tables, upserts the rows
(`on_conflict`), and reads them.
"""

from consumer.store.sqlgen.backlog import (
    BACKLOG_OUTBOX_INDEX,
    BACKLOG_OUTBOX_INDEX_NAME,
    backlog_of_keys,
    backlog_query,
    backlog_seq,
    backlog_table,
    backlog_upsert,
)
from consumer.store.sqlgen.derived import (
    ROWS,
    bounds_source,
    first_bounds,
    has_own_rows,
    rows_of,
    source_bounds,
)
from consumer.store.sqlgen.dialect import (
    BINS_MERGE,
    POSTGRES,
    ROW_KEY,
    SQLITE,
    Dialect,
    merge_of,
    merged_columns,
    missing_columns,
    on_conflict,
    row_table,
)
from consumer.store.sqlgen.purged import (
    PURGE_ROWS,
    PURGED_BEFORE,
    STORED_GROUPINGS,
    advanced,
    horizons,
    kept,
    retained,
)
from consumer.store.sqlgen.reads import key_order, page, query, rank_value, ranked, starts_in
from consumer.store.sqlgen.recheck import RECHECKED, Source

__all__ = [
    "BACKLOG_OUTBOX_INDEX",
    "BACKLOG_OUTBOX_INDEX_NAME",
    "BINS_MERGE",
    "POSTGRES",
    "PURGED_BEFORE",
    "PURGE_ROWS",
    "RECHECKED",
    "ROWS",
    "ROW_KEY",
    "SQLITE",
    "STORED_GROUPINGS",
    "Dialect",
    "Source",
    "advanced",
    "backlog_of_keys",
    "backlog_query",
    "backlog_seq",
    "backlog_table",
    "backlog_upsert",
    "bounds_source",
    "first_bounds",
    "has_own_rows",
    "horizons",
    "kept",
    "key_order",
    "merge_of",
    "merged_columns",
    "missing_columns",
    "on_conflict",
    "page",
    "query",
    "rank_value",
    "ranked",
    "retained",
    "row_table",
    "rows_of",
    "source_bounds",
    "starts_in",
]
