"""`convmetrics metrics`: the metrics as a terminal table (rich) or JSON, read from the
store or from a running API: the rows (`sources`), the table (`render`), the command
(`command`)."""

from consumer.serve.report.command import add_metric_set_argument, add_sla_buckets_argument, register
from consumer.serve.report.render import Grid, fitted, show
from consumer.serve.report.sources import (
    ApiSource,
    ReportError,
    StoreSource,
    build_report,
    human_duration,
    last_windows_from,
    parse_duration,
    utc_text,
)

__all__ = [
    "ApiSource",
    "Grid",
    "ReportError",
    "StoreSource",
    "add_metric_set_argument",
    "add_sla_buckets_argument",
    "build_report",
    "fitted",
    "human_duration",
    "last_windows_from",
    "parse_duration",
    "register",
    "show",
    "utc_text",
]
