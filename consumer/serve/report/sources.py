"""The rows of a `convmetrics metrics` report, read from the store or a running API."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from consumer.exceptions import ConsumerError, QueryError
from consumer.fold.registry import (
    DEFAULT_METRIC_SET,
    DEFAULT_SLA_BUCKETS,
    metric_set,
)
from consumer.fold.windows import ALL, WINDOWS
from consumer.serve.query import ClosureQuery, parse_query

ENV_STORE = "CONVMETRICS_STORE"
ENV_API = "CONVMETRICS_API"
ENV_API_TOKEN = "CONVMETRICS_API_TOKEN"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NOW = "now"  # the window of a --backlog report: the live gauges
#: `convmetrics metrics --window` and `--by` when not given (the backlog takes neither)
DEFAULT_WINDOW = "1h"
DEFAULT_BY = "channel-type"
BY_FLAG = {"channel-type": "channel_type", "channel_type": "channel_type", "account": "account"}


class ReportError(ConsumerError):
    """The metrics could not be read (no store, API unreachable or refusing the query)."""


class AcrossTenantsError(ReportError):
    """The API refused a view across tenants (403): the token is scoped to accounts."""


def parse_duration(text: str) -> int:
    """`90m`, `24h`, `7d`, `30s` (or plain seconds) -> seconds; argparse type."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 90m, 24h or 7d, got {text!r}")
    return int(m.group(1)) * UNITS[m.group(2) or "s"]


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


class StoreSource:
    def __init__(
        self, url: str, sla_buckets: str = DEFAULT_SLA_BUCKETS, metrics: str = DEFAULT_METRIC_SET
    ) -> None:
        from consumer.store import open_store

        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise ReportError(f"no store at {url} (pass --store URL, or --api URL of a running API)")
        # the store's own metric set (as `serve` reads it): a wider one would add its tables
        # and columns to the store, a write (and on PostgreSQL the schema lock) for a report
        self.store = open_store(url, registry=metric_set(metrics, sla_buckets))

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
        from consumer.serve.metrics_query import NO_GAUGES, backlog_json, parse_backlog_query

        if not self.store.registry.gauges:  # as the API answers (404); the query's fault: exit 2
            raise QueryError(NO_GAUGES)
        q = parse_backlog_query(params, self.store.registry)  # the API's own checks and messages
        as_of, rows = self.store.backlog(q.group.name, key=q.key, parts=q.parts)
        return backlog_json(q, as_of, rows, self.store.registry)


class ApiSource:
    def __init__(self, base: str, token: str | None = None) -> None:
        import httpx

        self.base = base.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.base, timeout=30, headers=headers)

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
            # a query the API refuses (400), or its store's metric set lacks (404), is the
            # command line's fault (exit 2), as the store source finds it; the rest, 1
            failed = QueryError if r.status_code in (400, 404) else ReportError
            if r.status_code == 403:
                failed = AcrossTenantsError
            raise failed(f"{self.base}{path} answered {r.status_code}: {reason}")
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
    #: `--group` (GET /v1/metrics, whose body names it `group`), else `--by` (/v1/closures)
    grouped: bool = False

    def as_json(self) -> dict[str, Any]:
        if self.window == NOW:  # the API's body (GET /v1/backlog)
            return {"group": self.by, "as_of": self.as_of, "rows": self.rows, "truncated": self.truncated}
        return {
            "group" if self.grouped else "by": self.by,
            "window": self.window,
            "from": self.start_from,
            "rows": self.rows,
            "truncated": self.truncated,
        }


def build_report(source: Source, args: argparse.Namespace) -> Report:
    if args.backlog:
        return _backlog_report(source, args)
    args = argparse.Namespace(**{**vars(args), "window": args.window or DEFAULT_WINDOW})
    if args.group is not None:
        return _group_report(source, args)
    if args.where:
        flags = ", ".join("--" + d.replace("_", "-") for d in args.where)
        raise QueryError(f"{flags} filter(s) --group or --backlog; --by selects one key with --key")
    by = BY_FLAG[args.by or DEFAULT_BY]
    if args.last is not None and args.window == ALL:
        raise QueryError("--last needs a sized window (--window 1m, 1h or 1d), not all")
    params = {"by": by, "window": args.window, "limit": str(args.limit)}
    if args.key:
        params["key"] = args.key
    q = parse_query(params)  # the API's own validation and messages
    if args.last is None:
        rows, truncated = source.rows(q)
        return Report(by, args.window, None, None, rows, truncated)

    def closures(start: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        asked = parse_query({**params, "from": str(start)}) if start is not None else q
        return source.rows(replace(asked, limit=limit))

    start_from, rows, truncated = _last_span(source, args.window, args.last, args.limit, closures)
    return Report(by, args.window, args.last, start_from, rows, truncated)


def _group_report(source: Source, args: argparse.Namespace) -> Report:
    """`--group`: the rows of `/v1/metrics` (every metric of the store's metric set)."""
    if args.key or args.by:
        raise QueryError(
            "--by and --key choose closure metrics; --group takes filters by dimension (--account 42)"
        )
    params = {"group": args.group, "window": args.window, "limit": str(args.limit)}
    params |= {d: str(v) for d, v in (args.where or {}).items()}
    if args.last is None:
        rows, truncated = source.metrics_rows(params)
        return Report(args.group, args.window, None, None, rows, truncated, grouped=True)
    if args.window == ALL:
        raise QueryError("--last needs a sized window (--window 1m, 1h or 1d), not all")

    def grouped(start: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        since = {"from": str(start)} if start is not None else {}
        return source.metrics_rows({**params, **since, "limit": str(limit)})

    start_from, rows, truncated = _last_span(source, args.window, args.last, args.limit, grouped)
    return Report(args.group, args.window, args.last, start_from, rows, truncated, grouped=True)


#: rows of a tenant's whole history asked at once (`_last_span`), in pages of the API's
EVERY_ROW = 1 << 62
#: a report's rows from a window start (None: every window), at most so many: more or not
Fetch = Callable[[int | None, int], tuple[list[dict[str, Any]], bool]]


def _last_span(
    source: Source, window: str, last: int, limit: int, fetch: Fetch
) -> tuple[int | None, list[dict[str, Any]], bool]:
    """`--last`: the rows of the windows overlapping the last `last` seconds up to the
    newest window of the data (`Source.newest`), their first start, and whether more were
    left out. A token scoped to accounts may not read the data's newest window (it is
    across tenants): then every row it may read is fetched and the span counted back from
    the newest of those, its own."""
    size = WINDOWS[window]
    assert size is not None
    try:
        newest = source.newest(window)
    except AcrossTenantsError:
        every, _ = fetch(None, EVERY_ROW)
        if not every:
            return None, [], False
        start = last_windows_from(max(int(r["window_start"]) for r in every), size, last)
        kept = [r for r in every if int(r["window_start"]) >= start]
        return start, kept[:limit], len(kept) > limit
    if newest is None:
        return None, [], False
    start = last_windows_from(newest, size, last)
    rows, truncated = fetch(start, limit)
    return start, rows, truncated


def _backlog_report(source: Source, args: argparse.Namespace) -> Report:
    """`--backlog`: the rows of `/v1/backlog` (open, unassigned, snoozed now)."""
    if args.key or args.by:
        raise QueryError(
            "--by and --key choose closure metrics; --backlog takes --group and filters (--account 42)"
        )
    if args.last is not None or args.window is not None:
        raise QueryError("--backlog counts conversations now: it takes no --last or --window")
    group = args.group or "channel_type"
    body = source.backlog({"group": group} | {d: str(v) for d, v in (args.where or {}).items()})
    rows = body["rows"][: args.limit]
    return Report(group, NOW, None, None, rows, len(body["rows"]) > args.limit, body["as_of"])
