"""The metric registry: the one place where a metric, a dimension and a grouping are declared.

Everything downstream iterates over a `Registry` instead of naming metrics: the stores'
tables and SQL (both dialects), `/v1/closures` JSON, Prometheus, the metrics topic, the
`metrics` report and the dashboard's table. Adding a metric means a line in `declared`, a
rule in the fold (the reference one and the compiled one) and its tests.

Storage follows from the declaration: a counter is one column (`column`); a distribution
is `<column>_count`, `_sum`, `_min`, `_max` plus its sketch bins, which live in the row's
one bins blob (SQLite) or bins table (PostgreSQL) shifted by `bin_base`, so the
distributions of a row never share a bin index.

`model` holds the vocabulary (`Metric`, `Dimension`, `Grouping`, `Registry`), `declared`
what is declared with it (`REGISTRY`, the metric sets); both are re-exported here.
"""

from consumer.fold.registry.declared import (
    CLOSURES,
    DEFAULT_METRIC_SET,
    DEFAULT_SLA_BUCKETS,
    ENV_METRIC_SET,
    ENV_SLA_BUCKETS,
    METRIC_SETS,
    REGISTRY,
    metric_set,
    parse_sla_buckets,
)
from consumer.fold.registry.model import (
    ACCOUNT,
    ACCOUNT_CHANNEL_TYPE,
    APP,
    BIN_SPAN,
    CHANNEL_TYPE,
    CONDITIONS,
    FIRST_CLOSE,
    GAUGE_NAMES,
    INBOX,
    RANK_STATS,
    RULES,
    TTFA,
    Dimension,
    Grouping,
    Kind,
    Metric,
    Registry,
    SlaBound,
)

__all__ = [
    "ACCOUNT",
    "ACCOUNT_CHANNEL_TYPE",
    "APP",
    "BIN_SPAN",
    "CHANNEL_TYPE",
    "CLOSURES",
    "CONDITIONS",
    "DEFAULT_METRIC_SET",
    "DEFAULT_SLA_BUCKETS",
    "ENV_METRIC_SET",
    "ENV_SLA_BUCKETS",
    "FIRST_CLOSE",
    "GAUGE_NAMES",
    "INBOX",
    "METRIC_SETS",
    "RANK_STATS",
    "REGISTRY",
    "RULES",
    "TTFA",
    "Dimension",
    "Grouping",
    "Kind",
    "Metric",
    "Registry",
    "SlaBound",
    "metric_set",
    "parse_sla_buckets",
]
