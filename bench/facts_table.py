"""What a row costs SQLite's writer in each stored form the full metric set's fine groupings
could take (docs/performance.md, "Metric sets"): a metric row as the stores keep it (the
baseline), and a narrow table of facts, one row per counted event, appended with no index,
or read by account through an `(account, t)` index or an `(account, t, id)` key.

    .venv/bin/python bench/facts_table.py [--rows 1000000] [--commit 50000]

Each form takes `--rows` new rows in commits of `--commit` (WAL, synchronous=NORMAL, an 8
MiB page cache: the store's settings) from one `INSERT ... SELECT` over a generated series,
so no Python runs per row: 10,000 accounts, rows in no order or sorted by account within
each commit (as the stores write theirs). Prints µs per row and the ratio to the metric
row in the same run; writes bench/results/facts-table.md. No broker, one thread.
"""

from __future__ import annotations

import argparse
import datetime
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import loadavg, machine  # noqa: E402

from consumer.fold.registry import REGISTRY  # noqa: E402
from consumer.store import sqlgen  # noqa: E402

#: a generated series of row numbers [?, ?)
SERIES = "WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?) "
#: a fact: its account (10,000), time (within 2,000 minutes), id, dimensions and values
FACT_COLUMNS = (
    "account INTEGER NOT NULL, t INTEGER NOT NULL, id INTEGER NOT NULL, channel_type TEXT, "
    "inbox INTEGER, app INTEGER, created INTEGER, closures INTEGER, first_closes INTEGER, "
    "reopens INTEGER, closed_unread INTEGER, expired INTEGER, assignments INTEGER, "
    "snoozes INTEGER, ttc_n INTEGER, ttc INTEGER, ttfa_n INTEGER, ttfa INTEGER"
)
FACT = (
    "SELECT i * 7919 % 10000 AS a, (i % 2000) * 60 + i % 60 AS t, i, 'WHATSAPP', i % 97, "
    "i % 5, 1, 0, 0, 0, 0, 0, 0, 0, 1, i % 9000, 0, NULL FROM s"
)


def metric_row() -> tuple[list[str], str]:
    """The stores' metric row table and an insert of one new 1-minute row per series number."""
    cols = REGISTRY.value_columns
    values = ", ".join("1" if sqlgen.merge_of(c, REGISTRY) == "sum" else "NULL" for c in cols)
    key = "(i * 7919 % 10000) || '|' || (i % 97) || '|' || (i % 5) || '|WHATSAPP' || (i / 2000)"
    insert = (
        f"INSERT INTO metric_rows (by, win, start, key, partition, {', '.join(cols)}, seq, bins) "
        f"SELECT 'facts', '1m', (i % 2000) * 60, {key}, -1, {values}, 1, randomblob(12) FROM s"
    )
    return [sqlgen.row_table(sqlgen.SQLITE, REGISTRY)], insert


def forms() -> dict[str, tuple[list[str], str]]:
    table = f"CREATE TABLE facts ({FACT_COLUMNS}"
    unsorted, ordered = f"INSERT INTO facts {FACT}", f"INSERT INTO facts {FACT} ORDER BY a, t"
    return {
        "metric row (the baseline), no order": metric_row(),
        "fact, appended, no index": ([table + ")"], unsorted),
        "fact, (account, t) index, no order": (
            [table + ")", "CREATE INDEX f_at ON facts (account, t)"],
            unsorted,
        ),
        "fact, (account, t) index, sorted": (
            [table + ")", "CREATE INDEX f_at ON facts (account, t)"],
            ordered,
        ),
        "fact, (account, t, id) key, sorted": (
            [table + ", PRIMARY KEY (account, t, id)) WITHOUT ROWID"],
            ordered,
        ),
    }


def run(path: Path, ddl: list[str], insert: str, rows: int, commit: int) -> float:
    """µs per row of `rows` inserted in commits of `commit` into a fresh database."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-8192"):
        db.execute(f"PRAGMA {pragma}")
    for statement in ddl:
        db.execute(statement)
    began = time.perf_counter()
    for first in range(0, rows, commit):
        db.execute("BEGIN")
        db.execute(SERIES + insert, (first, min(first + commit, rows)))
        db.execute("COMMIT")
    took = time.perf_counter() - began
    db.close()
    return took / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per form (default 1,000,000)")
    parser.add_argument(
        "--commit", type=int, default=50_000, help="rows per commit (default 50,000: the full set's)"
    )
    args = parser.parse_args()
    if args.rows < 1 or args.commit < 1:
        parser.error("--rows and --commit must be at least 1")
    start = loadavg()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-facts-") as tmp:
        for i, (name, (ddl, insert)) in enumerate(forms().items()):
            figures[name] = run(Path(tmp) / f"{i}.db", ddl, insert, args.rows, args.commit)
            print(f"{name}: {figures[name]:.2f} µs per row", flush=True)
    base = next(iter(figures.values()))
    lines = [
        f"Measured by `bench/facts_table.py` on {datetime.date.today()}: "
        f"`.venv/bin/python bench/facts_table.py --rows {args.rows} --commit {args.commit}` "
        f"(SQLite {sqlite3.sqlite_version}; {machine()['cpu']}; load average {start} at start, "
        f"{loadavg()} at end).",
        "",
        "| stored form | µs per row | / metric row |",
        "|---|---|---|",
        *(f"| {name} | {us:.2f} | {us / base:.2f} |" for name, us in figures.items()),
        "",
    ]
    out = ROOT / "bench" / "results" / "facts-table.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines[2:]))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
