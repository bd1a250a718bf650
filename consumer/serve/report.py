"""`convmetrics metrics`: closure metrics as a terminal table (rich) or JSON, read from the
store or from a running API."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from consumer.exceptions import ConsumerError, QueryError
from consumer.fold.registry import (
    DEFAULT_SLA_BUCKETS,
    ENV_SLA_BUCKETS,
    REGISTRY,
    metric_set,
    parse_sla_buckets,
)
from consumer.fold.windows import ALL, WINDOWS
from consumer.serve.query import ClosureQuery, parse_query

ENV_STORE = "CONVMETRICS_STORE"
ENV_API = "CONVMETRICS_API"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NOW = "now"  # the window of a --backlog report: the live gauges
_BY_FLAG = {"channel-type": "channel_type", "channel_type": "channel_type", "account": "account"}


class ReportError(ConsumerError):
    """The metrics could not be read (no store, API unreachable or refusing the query)."""


def parse_duration(text: str) -> int:
    """`90m`, `24h`, `7d`, `30s` (or plain seconds) -> seconds; argparse type."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 90m, 24h or 7d, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def human_duration(seconds: float | None) -> str:
    """4m12s, 3h05m, 2d04h: two units, enough to compare at a glance."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def last_windows_from(newest_start: int, size: int, last: int) -> int:
    """Start of the oldest window overlapping the `last` seconds that end with the newest window."""
    end = newest_start + size
    return (end - last) - (end - last) % size


def utc_text(t: int | None) -> str:
    return "all time" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


class Source(Protocol):
    def newest(self, window: str) -> int | None: ...

    def rows(self, q: ClosureQuery) -> tuple[list[dict[str, Any]], bool]:
        """Up to q.limit rows in API JSON shape, and whether more exist."""
        ...

    def metrics_rows(self, params: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` rows of `/v1/metrics` for these parameters, and whether more exist."""
        ...

    def backlog(self, params: dict[str, str]) -> dict[str, Any]:
        """The body of `/v1/backlog` for these parameters."""
        ...


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
        type=sla_buckets_arg,
        default=os.environ.get(ENV_SLA_BUCKETS, DEFAULT_SLA_BUCKETS),
        metavar="BOUNDS",
        help=f"{what} (env {ENV_SLA_BUCKETS}; default {DEFAULT_SLA_BUCKETS})",
    )


class StoreSource:
    def __init__(self, url: str, sla_buckets: str = DEFAULT_SLA_BUCKETS) -> None:
        from consumer.store import open_store

        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise ReportError(f"no store at {url} (pass --store URL, or --api URL of a running API)")
        # every metric, time to close's buckets as the store's consumers count them
        self.store = open_store(url, registry=metric_set("full", sla_buckets))

    def newest(self, window: str) -> int | None:
        from consumer.serve.overview import newest_windows

        return newest_windows(self.store)[window]

    def rows(self, q: ClosureQuery) -> tuple[list[dict[str, Any]], bool]:
        from consumer.store.render import row_json

        found = self.store.query(q.by, q.window, key=q.key, start_from=q.start_from, limit=q.limit + 1)
        registry = self.store.registry
        shown = registry.closures_shown  # what /v1/closures shows
        return [row_json(r, registry, shown) for r in found[: q.limit]], len(found) > q.limit

    def metrics_rows(self, params: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
        from consumer.serve.metrics_query import metrics_json, parse_metrics_query

        q = parse_metrics_query(params, self.store.registry)  # the API's own checks and messages
        found = self.store.query(
            q.group.name, q.window, key=q.key, start_from=q.start_from, limit=q.limit + 1, parts=q.parts
        )
        return metrics_json(q, found, self.store.registry)["rows"], len(found) > q.limit

    def backlog(self, params: dict[str, str]) -> dict[str, Any]:
        from consumer.serve.metrics_query import backlog_json, parse_backlog_query

        q = parse_backlog_query(params, self.store.registry)  # the API's own checks and messages
        as_of, rows = self.store.backlog(q.group.name, key=q.key, parts=q.parts)
        return backlog_json(q, as_of, rows, self.store.registry)


class ApiSource:
    def __init__(self, base: str) -> None:
        import httpx

        self.base = base.rstrip("/")
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            r = self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ReportError(f"cannot reach the API at {self.base}: {exc}") from None
        if r.status_code != 200:
            try:
                reason = r.json().get("error", r.text)
            except ValueError:
                reason = r.text.strip()[:200]
            raise ReportError(f"{self.base}{path} answered {r.status_code}: {reason}")
        return r.json()

    def newest(self, window: str) -> int | None:
        newest: int | None = self._get("/v1/summary")["newest"][window]
        return newest

    def rows(self, q: ClosureQuery) -> tuple[list[dict[str, Any]], bool]:
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"by": q.by, "window": q.window}
        if q.key is not None:
            params["key"] = q.key
        if q.start_from is not None:
            params["from"] = q.start_from
        while True:
            body = self._get("/v1/closures", {**params, "limit": min(10_000, q.limit - len(rows))})
            rows.extend(body["rows"])
            if not body["next"] or len(rows) >= q.limit:
                return rows, bool(body["next"])
            params["cursor"] = body["next"]

    def metrics_rows(self, params: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
        rows: list[dict[str, Any]] = []
        limit = int(params["limit"])
        asked: dict[str, Any] = dict(params)
        while True:
            body = self._get("/v1/metrics", {**asked, "limit": min(10_000, limit - len(rows))})
            rows.extend(body["rows"])
            if not body["next"] or len(rows) >= limit:
                return rows, bool(body["next"])
            asked["cursor"] = body["next"]

    def backlog(self, params: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = self._get("/v1/backlog", params)
        return body


@dataclass(frozen=True)
class Report:
    by: str
    window: str
    last: int | None
    start_from: int | None
    rows: list[dict[str, Any]]
    truncated: bool
    #: `--backlog`: the live gauges now (window "now"), as of the newest event time seen
    as_of: int | None = None

    def as_json(self) -> dict[str, Any]:
        if self.window == NOW:  # the API's body (GET /v1/backlog)
            return {"group": self.by, "as_of": self.as_of, "rows": self.rows, "truncated": self.truncated}
        return {
            "by": self.by,
            "window": self.window,
            "from": self.start_from,
            "rows": self.rows,
            "truncated": self.truncated,
        }


def build_report(source: Source, args: argparse.Namespace) -> Report:
    if args.backlog:
        return _backlog_report(source, args)
    if args.group is not None:
        return _group_report(source, args)
    by = _BY_FLAG[args.by]
    if args.last is not None and args.window == ALL:
        raise QueryError("--last needs a sized window (--window 1m, 1h or 1d), not all")
    params = {"by": by, "window": args.window, "limit": str(args.limit)}
    if args.key:
        params["key"] = args.key
    q = parse_query(params)  # the API's own validation and messages
    start_from = None
    if args.last is not None:
        newest = source.newest(args.window)
        size = WINDOWS[args.window]
        assert size is not None
        if newest is None:
            return Report(by, args.window, args.last, None, [], False)
        start_from = last_windows_from(newest, size, args.last)
        q = parse_query({**params, "from": str(start_from)})
    rows, truncated = source.rows(q)
    return Report(by, args.window, args.last, start_from, rows, truncated)


def _group_report(source: Source, args: argparse.Namespace) -> Report:
    """`--group`: the rows of `/v1/metrics` (every metric of the store's metric set)."""
    if args.key:
        raise QueryError("--key selects in --by; with --group filter by dimension (--account 42)")
    params = {"group": args.group, "window": args.window, "limit": str(args.limit)}
    params |= {d: str(v) for d, v in (args.where or {}).items()}
    start_from = None
    if args.last is not None:
        if args.window == ALL:
            raise QueryError("--last needs a sized window (--window 1m, 1h or 1d), not all")
        newest = source.newest(args.window)
        size = WINDOWS[args.window]
        assert size is not None
        if newest is None:
            return Report(args.group, args.window, args.last, None, [], False)
        start_from = last_windows_from(newest, size, args.last)
        params["from"] = str(start_from)
    rows, truncated = source.metrics_rows(params)
    return Report(args.group, args.window, args.last, start_from, rows, truncated)


def _backlog_report(source: Source, args: argparse.Namespace) -> Report:
    """`--backlog`: the rows of `/v1/backlog` (open, unassigned, snoozed now)."""
    if args.key:
        raise QueryError("--key selects in --by; with --backlog filter by dimension (--account 42)")
    if args.last is not None or args.window != "1h":
        raise QueryError("--backlog counts conversations now: it takes no --last or --window")
    group = args.group or "channel_type"
    body = source.backlog({"group": group} | {d: str(v) for d, v in (args.where or {}).items()})
    rows = body["rows"][: args.limit]
    return Report(group, NOW, None, None, rows, len(body["rows"]) > args.limit, body["as_of"])


def render_backlog(report: Report) -> Any:
    """A `--backlog` report: the key's dimensions and each gauge."""
    from rich.table import Table

    table = Table(
        title=f"Live backlog by {report.by}, as of {utc_text(report.as_of)} (newest event time)",
        title_justify="left",
    )
    dims = report.by.split(",")
    gauges = [k for k in (report.rows[0] if report.rows else {}) if k != "key"]
    for d in dims:
        table.add_column(d.replace("_", " ").capitalize(), no_wrap=True)
    for g in gauges:
        table.add_column(g.capitalize(), justify="right", no_wrap=True)
    for r in report.rows:
        table.add_row(*[str(r["key"][d]) for d in dims], *[f"{r[g]:,}" for g in gauges])
    return table


def render_group(report: Report) -> Any:
    """A `--group` report: the key's dimensions, each counter, time to close p50 and p90, and
    time to first assignment's p50 where the metric set has it (the rest: `--json`)."""
    from rich.table import Table

    span = f", last {_span_text(report.last)}" if report.last else ""
    window_label = "all time" if report.window == ALL else f"{report.window} windows"
    table = Table(title=f"Metrics by {report.by}, {window_label}{span}", title_justify="left")
    dims = list(report.rows[0]["key"]) if report.rows else report.by.split(",")
    counters = (
        [
            k
            for k, v in report.rows[0].items()
            if isinstance(v, int) and k not in ("window_start", "window_end")
        ]
        if report.rows
        else []
    )
    for d in dims:
        table.add_column(d.replace("_", " ").capitalize(), no_wrap=True)
    if report.window != ALL:
        table.add_column("Window start (UTC)", no_wrap=True)
    for c in counters:
        table.add_column(c.replace("_", " ").capitalize(), justify="right", no_wrap=True)
    table.add_column("TTC p50", justify="right", no_wrap=True)
    table.add_column("TTC p90", justify="right", no_wrap=True)
    first = report.rows[0] if report.rows else {}
    ttfa = "time_to_first_assignment" in first
    if ttfa:
        table.add_column("First assign p50", justify="right", no_wrap=True)
    for r in report.rows:
        cells = [str(r["key"][d]) for d in dims]
        if report.window != ALL:
            cells.append(utc_text(r["window_start"]))
        cells += [f"{r[c]:,}" for c in counters]
        t = r["time_to_close"]
        cells += [human_duration(t["p50"]), human_duration(t["p90"])]
        if ttfa:
            cells.append(human_duration(r["time_to_first_assignment"]["p50"]))
        table.add_row(*cells)
    return table


def render(report: Report) -> Any:
    from rich.table import Table

    if report.window == NOW:
        return render_backlog(report)
    if report.by not in _BY_FLAG.values():
        return render_group(report)

    by_label = "channel type" if report.by == "channel_type" else "account"
    span = f", last {_span_text(report.last)}" if report.last else ""
    window_label = "all time" if report.window == ALL else f"{report.window} windows"
    table = Table(title=f"Closures by {by_label}, {window_label}{span}", title_justify="left")
    table.add_column(by_label.capitalize(), no_wrap=True)
    if report.window != ALL:
        table.add_column("Window start (UTC)", no_wrap=True)
    for name in ("Closures", "Reopens", "Unread", "TTC p50", "TTC p90"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in report.rows:
        t = r["time_to_close"]
        unread = f"{100 * r['closed_unread'] / r['closures']:.1f}%" if r["closures"] else "-"
        cells = [str(r["key"])]
        if report.window != ALL:
            cells.append(utc_text(r["window_start"]))
        cells += [
            f"{r['closures']:,}",
            f"{r['reopens']:,}",
            unread,
            human_duration(t["p50"]),
            human_duration(t["p90"]),
        ]
        table.add_row(*cells)
    return table


def _span_text(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "metrics",
        help="print closure metrics as a table or JSON",
        description="Print closure metrics per channel type or account and window, from the store "
        "(default) or a running API. --last counts back from the NEWEST WINDOW IN THE DATA, not "
        "from the clock, so replayed or historical data shows the same way.",
    )
    p.add_argument("--by", choices=["channel-type", "account"], default="channel-type", help="grouping")
    p.add_argument("--window", choices=list(WINDOWS), default="1h", help="window size (default 1h)")
    p.add_argument(
        "--last",
        type=parse_duration,
        metavar="SPAN",
        help="only the windows overlapping the last SPAN (e.g. 90m, 24h, 7d) up to the end of the "
        "newest window in the data (not the current time)",
    )
    p.add_argument("--key", help="one channel type (e.g. EMAIL) or account id")
    p.add_argument(
        "--group",
        choices=[g.name for g in REGISTRY.groupings],
        help="every metric of the store's metric set by this grouping (GET /v1/metrics; "
        "account,channel_type, inbox and app need --metric-set full); instead of --by",
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
        "--limit", type=_positive, default=1000, help="at most this many rows, oldest first (default 1000)"
    )
    add_sla_buckets_argument(p, "with --store: time_to_close's SLA bucket bounds the store's consumers count")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--store",
        help=f"store URL to read (env {ENV_STORE}; default sqlite:///convmetrics.db)",
    )
    source.add_argument(
        "--api", help=f"base URL of a running API instead, e.g. http://127.0.0.1:8081 (env {ENV_API})"
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
    try:
        source: Source = (
            ApiSource(api)
            if api
            else StoreSource(
                args.store or os.environ.get(ENV_STORE, "sqlite:///convmetrics.db"), args.sla_buckets
            )
        )
        report = build_report(source, args)
    except ConsumerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, QueryError) else 1
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_json()).decode() + "\n")
    else:
        Console().print(render(report))
        if not report.rows:
            why = "; the live backlog needs consumers with --metric-set full" if args.backlog else ""
            print(f"no rows (the store holds no data for this query yet{why})", file=sys.stderr)
    if report.truncated:
        print(
            f"note: only the first {len(report.rows)} rows; narrow with --last or --key, or raise --limit",
            file=sys.stderr,
        )
    return 0
