"""`convmetrics produce`'s list of rejected items: every id and reason whole, on a terminal
(a table whose cells fold) and elsewhere (tab-separated lines for a pipe or a CI log)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from producer.backfill import Rejection
from producer.cli import print_rejected

LONG_ID = "evt-" + "0123456789abcdef" * 6  # 100 characters: wider than a default 80-column console
REJECTED = [
    Rejection(1, 2, LONG_ID, 422, "data.id: Input should be a valid integer"),
    Rejection(3, 4, "[/evt-1]", 400, "malformed JSON:\tline 1\ncolumn 2"),
    Rejection(5, 6, None, 400, "no id"),
]


def test_elsewhere_each_rejection_is_one_tab_separated_line_with_its_id_whole() -> None:
    buf = io.StringIO()
    print_rejected(Console(file=buf, force_terminal=False, width=80), REJECTED)
    lines = buf.getvalue().splitlines()
    assert lines == [
        "item\tline\tevent id\tstatus\treason",
        f"1\t2\t{LONG_ID}\t422\tdata.id: Input should be a valid integer",
        "3\t4\t[/evt-1]\t400\tmalformed JSON: line 1 column 2",
        "5\t6\t-\t400\tno id",
    ]


@pytest.mark.parametrize("width", [60, 80, 200])
def test_on_a_terminal_the_table_folds_a_long_id_and_never_cuts_it(width: int) -> None:
    buf = io.StringIO()
    print_rejected(Console(file=buf, force_terminal=True, color_system=None, width=width), REJECTED)
    text = buf.getvalue()
    cells = "".join(
        line.split("│")[3].strip()
        for line in text.splitlines()
        if line.count("│") >= 5 and "event id" not in line
    )
    assert LONG_ID in cells and "…" not in text and "[/evt-1]" in text
