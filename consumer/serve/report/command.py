"""`convmetrics metrics`: its flags, and the report printed as a table or JSON."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from consumer.fold.registry import (
    DEFAULT_METRIC_SET,
    DEFAULT_SLA_BUCKETS,
    ENV_METRIC_SET,
    ENV_SLA_BUCKETS,
    METRIC_SETS,
    REGISTRY,
    parse_sla_buckets,
)
from consumer.fold.windows import WINDOWS
from consumer.serve.report.render import render, show
from consumer.serve.report.sources import (
    BY_FLAG,
    DEFAULT_BY,
    DEFAULT_WINDOW,
    ENV_API,
    ENV_API_TOKEN,
    ENV_STORE,
    ApiSource,
    Source,
    StoreSource,
    build_report,
    parse_duration,
)
from schemas import argtypes


def sla_buckets_arg(text: str) -> str:
    """argparse type of `--sla-buckets` (on consume, serve and metrics): the text, checked
    (argparse names the flag in its error)."""
    try:
        parse_sla_buckets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sla-buckets: ")) from None
    return text


def add_sla_buckets_argument(p: argparse.ArgumentParser, what: str) -> None:
    """`--sla-buckets BOUNDS` (env CONVMETRICS_SLA_BUCKETS), its help beginning with `what`."""
    p.add_argument(
        "--sla-buckets",
        type=argtypes.or_env(sla_buckets_arg, ENV_SLA_BUCKETS),
        default=os.environ.get(ENV_SLA_BUCKETS, DEFAULT_SLA_BUCKETS),
        metavar="BOUNDS",
        help=f"{what} (env {ENV_SLA_BUCKETS}; default {DEFAULT_SLA_BUCKETS})",
    )


def add_metric_set_argument(p: argparse.ArgumentParser, what: str) -> None:
    """`--metric-set NAME` (env CONVMETRICS_METRIC_SET), its help beginning with `what`."""
    p.add_argument(
        "--metric-set",
        type=argtypes.or_env(argtypes.one_of(sorted(METRIC_SETS)), ENV_METRIC_SET),
        metavar="{" + ",".join(sorted(METRIC_SETS)) + "}",
        default=os.environ.get(ENV_METRIC_SET, DEFAULT_METRIC_SET),
        help=f"{what} (env {ENV_METRIC_SET}; default {DEFAULT_METRIC_SET})",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "metrics",
        help="print the metrics (or the live backlog) as a table or JSON",
        description="Print metrics per window, from the store (default) or a running API: the closure "
        "metrics per channel type or account (--by), every metric of the metric set by a grouping "
        "(--group), or the live backlog (--backlog). --last counts back from the NEWEST WINDOW IN "
        "THE DATA, not from the clock, so replayed or historical data shows the same way.",
    )
    p.add_argument(
        "--by",
        choices=list(BY_FLAG),
        default=None,
        help=f"grouping of the closure metrics (default {DEFAULT_BY}; channel_type as the API "
        "spells it works too); --group for the others",
    )
    p.add_argument(
        "--window", choices=list(WINDOWS), default=None, help=f"window size (default {DEFAULT_WINDOW})"
    )
    p.add_argument(
        "--last",
        type=parse_duration,
        metavar="SPAN",
        help="only the windows overlapping the last SPAN (e.g. 90m, 24h, 7d) up to the end of the "
        "newest window in the data (not the current time)",
    )
    p.add_argument("--key", help="one channel type (e.g. EMAIL) or account id")
    groups = [g.name for g in REGISTRY.groupings]
    p.add_argument(
        "--group",
        choices=groups,
        metavar="GROUP",
        help="every metric of the store's metric set by this grouping, one of "
        + ", ".join(groups)
        + " (GET /v1/metrics; account,channel_type, inbox and app need --metric-set full); instead of --by",
    )
    p.add_argument(
        "--backlog",
        action="store_true",
        help="the live backlog instead of windowed metrics: open, unassigned and snoozed "
        "conversations now, by --group (default channel_type) (GET /v1/backlog; the consumers "
        "fold it with --metric-set full)",
    )
    for dim in REGISTRY.dimensions:
        flag = "--" + dim.name.replace("_", "-")
        p.add_argument(
            flag,
            dest="where",
            type=_where(dim.name),
            action=_Merge,
            metavar=dim.name.upper(),
            help=f"with --group or --backlog: only keys whose {dim.name} is this",
        )
    p.add_argument("--json", action="store_true", help="print JSON rows (the API's shape) instead")
    p.add_argument(
        "--limit",
        type=argtypes.positive_int,
        default=1000,
        help="at most this many rows, oldest first (default 1000)",
    )
    add_metric_set_argument(
        p, "with --store: the metric set the store's consumers fold (as their --metric-set), read as it is"
    )
    add_sla_buckets_argument(p, "with --store: time_to_close's SLA bucket bounds the store's consumers count")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--store",
        help=f"store URL to read (env {ENV_STORE}; default sqlite:///convmetrics.db). Without --store "
        f"and --api, {ENV_API} is read first, then {ENV_STORE}",
    )
    source.add_argument(
        "--api", help=f"base URL of a running API instead, e.g. http://127.0.0.1:8081 (env {ENV_API})"
    )
    p.add_argument(
        "--token-env",
        default=ENV_API_TOKEN,
        metavar="NAME",
        help="with --api: the environment variable holding the API token sent as "
        f"'Authorization: Bearer <token>' (default {ENV_API_TOKEN}; unset: none sent)",
    )
    p.set_defaults(func=_metrics)


def _where(name: str) -> Any:
    """argparse type of a dimension filter: (name, value)."""

    def parse(text: str) -> tuple[str, str]:
        return name, text

    return parse


class _Merge(argparse.Action):
    """Collects dimension filters into one dict (`args.where`)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        where = dict(getattr(namespace, self.dest) or {})
        name, value = values
        where[name] = value
        setattr(namespace, self.dest, where)


def _metrics(args: argparse.Namespace) -> int:
    import orjson
    from rich.console import Console

    api = args.api or (None if args.store else os.environ.get(ENV_API))
    # a refused query (2) or an unreadable store or API (1) raises: `convmetrics` prints its line
    source: Source = (
        ApiSource(api, os.environ.get(args.token_env) or None)
        if api
        else StoreSource(
            args.store or os.environ.get(ENV_STORE, "sqlite:///convmetrics.db"),
            args.sla_buckets,
            args.metric_set,
        )
    )
    report = build_report(source, args)
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_json()).decode() + "\n")
    else:
        show(Console(), render(report))
        if not report.rows:  # a store without the backlog was refused before (exit 2)
            print("no rows (the store holds no data for this query yet)", file=sys.stderr)
    if report.truncated:
        print(
            f"note: only the first {len(report.rows)} rows; narrow with --last or --key, or raise --limit",
            file=sys.stderr,
        )
    return 0
