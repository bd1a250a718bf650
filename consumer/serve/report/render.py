"""A `convmetrics metrics` report as a terminal table (rich)."""

from __future__ import annotations

from typing import Any

from consumer.fold.windows import ALL
from consumer.serve.report.sources import BY_FLAG, NOW, UNITS, Report, human_duration, utc_text


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
    if report.by not in BY_FLAG.values():
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
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"
