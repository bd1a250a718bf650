"""What a row costs SQLite's writer in each stored form the full metric set's fine groupings
could take (docs/performance.md, "Metric sets"): a metric row as the SQLite store keeps it
(its table, `WITHOUT ROWID`; the baseline: a commit's new rows sorted in the table's key
order, as the stores write them), and a narrow table of facts, one row per counted event,
appended with no index, or read by account through an `(account, t)` index or an
`(account, t, id)` key.

    .venv/bin/python bench/facts_table.py [--rows 1000000] [--commit 50000] [--runs 3]

Each form takes `--rows` new rows in commits of `--commit` from one `INSERT ... SELECT`
over a generated series, so no Python runs per row: 10,000 accounts, starts spread over
2,000 minutes, rows in no order or sorted within each commit. The connection has the
store's settings (WAL, synchronous=NORMAL, an 8 MiB page cache, its writer's
autocheckpoint, temporary B-trees in a file; the store's checkpoint thread is left out).
The forms alternate, `--runs` times each; prints the median µs per row and its ratio to
the baseline's, and writes bench/results/facts-table.md. No broker, one thread.
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

from common import loadavg, machine, median  # noqa: E402

from consumer.fold.registry import REGISTRY  # noqa: E402
from consumer.store import sqlgen  # noqa: E402
from consumer.store.sqlite.sql import statements  # noqa: E402
from consumer.store.sqlite.store import CONNECTION_PRAGMAS  # noqa: E402
from consumer.store.sqlite.wal import WRITER_AUTOCHECKPOINT  # noqa: E402

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


def metric_row(order: str) -> tuple[list[str], str]:
    """The SQLite store's metric row table and an insert of one new 1-minute row per series
    number, `order` appended (the stores insert a commit's rows in key order)."""
    cols = REGISTRY.value_columns
    values = ", ".join("1" if sqlgen.merge_of(c, REGISTRY) == "sum" else "NULL" for c in cols)
    key = "(i * 7919 % 10000) || '|' || (i % 97) || '|' || (i % 5) || '|WHATSAPP' || (i / 2000)"
    insert = (
        f"INSERT INTO metric_rows (by, win, start, key, partition, {', '.join(cols)}, seq, bins) "
        f"SELECT 'facts', '1m', (i % 2000) * 60 AS s, {key} AS k, -1, {values}, 1, randomblob(12) "
        f"FROM s {order}"
    )
    return [statements(REGISTRY).rows], insert


#: the baseline's name (the first form)
BASELINE = "metric row, sorted (the baseline)"


def forms() -> dict[str, tuple[list[str], str]]:
    table = f"CREATE TABLE facts ({FACT_COLUMNS})"
    indexed = [table, "CREATE INDEX f_at ON facts (account, t)"]
    keyed = [f"CREATE TABLE facts ({FACT_COLUMNS}, PRIMARY KEY (account, t, id)) WITHOUT ROWID"]
    unsorted, ordered = f"INSERT INTO facts {FACT}", f"INSERT INTO facts {FACT} ORDER BY a, t"
    return {
        BASELINE: metric_row("ORDER BY s, k"),
        "metric row, no order": metric_row(""),
        "fact, appended, no index": ([table], unsorted),
        "fact, (account, t) index, no order": (indexed, unsorted),
        "fact, (account, t) index, sorted": (indexed, ordered),
        "fact, (account, t, id) key, sorted": (keyed, ordered),
    }


def run(path: Path, ddl: list[str], insert: str, rows: int, commit: int) -> float:
    """µs per row of `rows` inserted in commits of `commit` into a fresh database."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in (*CONNECTION_PRAGMAS, f"wal_autocheckpoint={WRITER_AUTOCHECKPOINT}", "temp_store=FILE"):
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
    parser.add_argument("--runs", type=int, default=3, help="runs of each form, alternating (default 3)")
    args = parser.parse_args()
    if args.rows < 1 or args.commit < 1 or args.runs < 1:
        parser.error("--rows, --commit and --runs must be at least 1")
    start, began = loadavg(), datetime.datetime.now(datetime.UTC)
    runs: dict[str, list[float]] = {name: [] for name in forms()}
    with tempfile.TemporaryDirectory(prefix="bench-facts-") as tmp:
        for r in range(args.runs):
            for i, (name, (ddl, insert)) in enumerate(forms().items()):
                runs[name].append(run(Path(tmp) / f"{r}-{i}.db", ddl, insert, args.rows, args.commit))
                print(f"run {r + 1}: {name}: {runs[name][-1]:.2f} µs per row", flush=True)
    figures = {name: median(us) for name, us in runs.items()}
    base = figures[BASELINE]
    lines = [
        f"Measured by `bench/facts_table.py` on {began:%Y-%m-%d %H:%M} UTC: "
        f"`.venv/bin/python bench/facts_table.py --rows {args.rows} --commit {args.commit} "
        f"--runs {args.runs}` (SQLite {sqlite3.sqlite_version}; {machine()['cpu']}; load average "
        f"{start} at start, {loadavg()} at end).",
        "",
        "| stored form | µs per row (median) | runs | / baseline |",
        "|---|---|---|---|",
        *(
            f"| {name} | {us:.2f} | {', '.join(f'{x:.2f}' for x in runs[name])} | {us / base:.2f} |"
            for name, us in figures.items()
        ),
        "",
    ]
    out = ROOT / "bench" / "results" / "facts-table.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines[2:]))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
