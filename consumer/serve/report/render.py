"""A `convmetrics metrics` report for the terminal (rich): its cells as a `Grid` (the
report's title, columns and rows as text), shown as a table where the terminal is wide
enough for every cell whole, else as one block per row (`fitted`). No cell is ever cut: a
table squeezed into 80 columns had shrunk some columns to nothing. Cells are text, never
rich markup (a key from the data may hold brackets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consumer.fold.registry import REGISTRY
from consumer.fold.windows import ALL
from consumer.serve.report.sources import NOW, UNITS, Report, human_duration, utc_text


@dataclass
class Grid:
    """A report's cells: its title, its columns (header, right-justified) and rows of text."""

    title: str
    columns: list[tuple[str, bool]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def column(self, header: str, right: bool = True) -> None:
        self.columns.append((header, right))


#: the narrowest a text column (a key, a window start) folds to before rows become blocks
FOLD_FLOOR = 8


def show(console: Any, grid: Grid) -> None:
    """`grid` printed on `console` (`fitted`)."""
    console.print(fitted(console, grid))


def fitted(console: Any, grid: Grid) -> Any:
    """`grid` laid out for `console`, every cell whole: a table where it fits the console's
    width (its headers wrapped at their spaces, then its text columns folded down to
    `FOLD_FLOOR` where it would not), else each row as a block of `header  value` lines."""
    from rich.cells import cell_len

    cells = [max((cell_len(row[i]) for row in grid.rows), default=0) for i in range(len(grid.columns))]
    headers = [header for header, _ in grid.columns]
    widths = [max(cell_len(h), c) for h, c in zip(headers, cells, strict=True)]
    if _table_width(widths) <= console.width:
        return _table(grid)
    excess = _table_width(widths) - console.width

    def shrink(i: int, floor: int) -> None:
        nonlocal excess
        cut = min(excess, widths[i] - floor)
        if cut > 0:
            widths[i], excess = widths[i] - cut, excess - cut

    # first the headers wrap at their spaces (the one that saves most first), then the text
    # columns fold (the widest first)
    words = [max(_longest_word(h), c) for h, c in zip(headers, cells, strict=True)]
    for i in sorted(range(len(widths)), key=lambda i: words[i] - widths[i]):
        shrink(i, words[i])
    text = [i for i, (_, right) in enumerate(grid.columns) if not right]
    for i in sorted(text, key=lambda i: -widths[i]):
        shrink(i, max(FOLD_FLOOR, _longest_word(headers[i])))
    return _table(grid, widths) if excess <= 0 else _blocks(grid)


def _longest_word(header: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(w) for w in header.split()), default=0)


def _table_width(widths: list[int]) -> int:
    """A table's width: its columns, a space of padding each side, a border around and between."""
    return sum(w + 2 for w in widths) + len(widths) + 1


def _table(grid: Grid, widths: list[int] | None = None) -> Any:
    """The grid as a table: each column as wide as its header and cells, or `widths` (the
    headers wrap to them, longer cells fold)."""
    from rich.console import JustifyMethod
    from rich.table import Table
    from rich.text import Text

    table = Table(title=grid.title, title_justify="left")
    for i, (header, right) in enumerate(grid.columns):
        justify: JustifyMethod = "right" if right else "left"
        if widths is None:
            table.add_column(header, justify=justify, no_wrap=True)
        else:
            table.add_column(header, justify=justify, width=widths[i], overflow="fold")
    for row in grid.rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _blocks(grid: Grid) -> Any:
    from rich.console import Group
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(grid.title)]
    for n, row in enumerate(grid.rows, 1):
        block = Table.grid(padding=(0, 2))
        block.add_column(style="bold")
        block.add_column()
        for (header, _), cell in zip(grid.columns, row, strict=True):
            block.add_row(header, Text(cell))
        parts += [Rule(f"{n} of {len(grid.rows)}", align="left"), block]
    return Group(*parts)


def render_backlog(report: Report) -> Grid:
    """A `--backlog` report: the key's dimensions and each gauge."""
    seen = "no events yet" if report.as_of is None else f"as of {utc_text(report.as_of)} (newest event time)"
    grid = Grid(f"Live backlog by {report.by}, {seen}")
    first, dims = _first_and_dims(report)
    gauges = [k for k in first if k != "key"]
    for d in dims:
        grid.column(d.replace("_", " ").capitalize(), right=False)
    for g in gauges:
        grid.column(g.capitalize())
    for r in report.rows:
        grid.rows.append([*[str(r["key"][d]) for d in dims], *[f"{r[g]:,}" for g in gauges]])
    return grid


def render_group(report: Report) -> Grid:
    """A `--group` report: the key's dimensions, each counter, time to close p50 and p90, and
    time to first assignment's p50 where the metric set has it (the rest: `--json`)."""
    grid = Grid(f"Metrics by {report.by}, {_windows_text(report)}")
    first, dims = _first_and_dims(report)
    counters = [k for k, v in first.items() if isinstance(v, int) and k not in ("window_start", "window_end")]
    for d in dims:
        grid.column(d.replace("_", " ").capitalize(), right=False)
    if report.window != ALL:
        grid.column("Window start (UTC)", right=False)
    for c in counters:
        grid.column(c.replace("_", " ").capitalize())
    grid.column("TTC p50")
    grid.column("TTC p90")
    ttfa = "time_to_first_assignment" in first
    if ttfa:
        grid.column("First assign p50")
    for r in report.rows:
        cells = [str(r["key"][d]) for d in dims]
        if report.window != ALL:
            cells.append(utc_text(r["window_start"]))
        cells += [f"{r[c]:,}" for c in counters]
        t = r["time_to_close"]
        cells += [human_duration(t["p50"]), human_duration(t["p90"])]
        if ttfa:
            cells.append(human_duration(r["time_to_first_assignment"]["p50"]))
        grid.rows.append(cells)
    return grid


def _first_and_dims(report: Report) -> tuple[dict[str, Any], list[str]]:
    """A report's first row ({} without rows: its columns are then the key's alone) and its
    key's dimensions, in the rows' order (without rows: as the grouping declares them)."""
    if not report.rows:
        return {}, list(REGISTRY.grouping(report.by).dimensions)
    return report.rows[0], list(report.rows[0]["key"])


def render(report: Report) -> Grid:
    if report.window == NOW:
        return render_backlog(report)
    if report.grouped:  # `--group`: /v1/metrics rows, whatever the grouping (account too)
        return render_group(report)

    by_label = "channel type" if report.by == "channel_type" else "account"
    grid = Grid(f"Closures by {by_label}, {_windows_text(report)}")
    grid.column(by_label.capitalize(), right=False)
    if report.window != ALL:
        grid.column("Window start (UTC)", right=False)
    for name in ("Closures", "Reopens", "Unread", "TTC p50", "TTC p90"):
        grid.column(name)
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
        grid.rows.append(cells)
    return grid


def _windows_text(report: Report) -> str:
    span = f", last {_span_text(report.last)}" if report.last else ""
    return ("all time" if report.window == ALL else f"{report.window} windows") + span


def _span_text(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"
