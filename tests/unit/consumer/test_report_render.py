"""`convmetrics metrics`' terminal output: at any terminal width every cell is shown whole
(a table squeezed into 80 columns had shrunk some columns to nothing), as a table while one
fits, its headers wrapped and then its text columns folded, else as one block per row."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from rich.console import Console

from consumer.serve.report.render import FOLD_FLOOR, Grid, _table_width, show


def grid() -> Grid:
    """A `--group account,channel_type` report's shape: text columns (the key, the window
    start), then numbers."""
    g = Grid("Metrics by account,channel_type, 1d windows")
    g.column("Account", right=False)
    g.column("Channel type", right=False)
    g.column("Window start (UTC)", right=False)
    for name in ("Closures", "Closed window expired", "Assignments", "TTC p50", "First assign p50"):
        g.column(name)
    g.rows = [
        ["1", "CLOUD_WABA", "2026-12-05 00:00", "19", "0", "52", "1h09m", "2m08s"],
        ["123456", "MESSAGEBIRD_WABA", "2026-12-06 00:00", "1,234,567", "12", "9", "-", "12h52m"],
    ]
    return g


def shown(width: int, g: Grid) -> str:
    out = io.StringIO()
    show(Console(file=out, width=width, color_system=None, legacy_windows=False), g)
    return out.getvalue()


def visible(text: str) -> Counter[str]:
    """The characters of `text` but spaces and the tables' and rules' lines."""
    return Counter(c for c in text if not c.isspace() and not "\u2500" <= c <= "\u257f")


def whole_width(g: Grid) -> int:
    return _table_width([max(len(h), *(len(r[i]) for r in g.rows)) for i, (h, _) in enumerate(g.columns)])


@pytest.mark.parametrize("width", [*range(44, 200, 9), 200])
def test_every_cell_is_shown_whole_at_any_width(width: int) -> None:
    g = grid()
    text = shown(width, g)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    # nothing cut: every character of every header and cell is there
    wanted = visible(" ".join([*(h for h, _ in g.columns), *(c for r in g.rows for c in r)]))
    assert not wanted - visible(text)
    for row in g.rows:  # numbers never fold
        for (_, right), cell in zip(g.columns, row, strict=True):
            if right:
                assert cell in text


def test_the_layout_changes_at_its_boundaries() -> None:
    g = grid()
    full = whole_width(g)
    at = shown(full, g)
    assert "Window start (UTC)" in at and "Closed window expired" in at  # one line of headers
    assert sum("2026-12-05 00:00" in line for line in at.splitlines()) == 1
    under = shown(full - 1, g)
    assert "Closed window expired" not in under and "┏" in under  # headers wrap, still a table
    # the narrowest table: headers at their longest word, text columns folded to the floor
    words = [
        max(max(len(w) for w in h.split()), *(len(r[i]) for r in g.rows))
        for i, (h, _) in enumerate(g.columns)
    ]
    floors = [
        w if right else min(w, max(FOLD_FLOOR, *(len(x) for x in h.split())))
        for (h, right), w in zip(g.columns, words, strict=True)
    ]
    narrowest = _table_width(floors)
    assert "┏" in shown(narrowest, g) and "1 of 2" not in shown(narrowest, g)
    blocks = shown(narrowest - 1, g)
    assert "┏" not in blocks and "1 of 2" in blocks and "2 of 2" in blocks
    assert any(line.split() == ["Closed", "window", "expired", "12"] for line in blocks.splitlines())


@pytest.mark.parametrize("width", [200, 60])
def test_cells_are_text_not_markup(width: int) -> None:
    """A key from the data is printed as it is, brackets and all, in a table or in blocks."""
    g = grid()
    g.rows[0][1] = "[/bold]X[red]"
    assert "[/bold]X[red]" in shown(width, g)


def test_an_empty_report_is_a_table_of_headers() -> None:
    g = grid()
    g.rows = []
    text = shown(80, g)
    assert "Metrics by account,channel_type" in text and "┏" in text
