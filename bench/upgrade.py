"""How long the upgrade to store format 2 takes (docs/deployment.md, "Upgrading to store
format 2"): a store of format 1 holding `--rows` source rows under the former name, split
evenly over the windows 1m, 1h, 1d and all, opened by this release, which renames them
(`consumer.store.upgrade.rename`) in one transaction before it is open.

    .venv/bin/python bench/upgrade.py [--rows 2000000] [--store sqlite|postgres]

The rows are made by one `INSERT ... SELECT` over a generated series (the shape of a
full-set store's source rows: keys of (account, inbox, app, channel type), one closure
each), the store's format noted as 1 and, on PostgreSQL, its schema stamps removed, as a
release before left them. Prints the rows, the store's size and the seconds the open
took, and the rename's log lines (a count per window). Prints only: the figures are
quoted in bench/results/consumer-full.md. PostgreSQL: $CONVMETRICS_POSTGRES_URL, else a
local server as in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import loadavg, machine  # noqa: E402

from consumer.fold.registry import REGISTRY  # noqa: E402
from consumer.store import store_format, upgrade  # noqa: E402
from consumer.store.sqlite import SqliteStore  # noqa: E402

#: each window's share of the rows: (window, seconds between starts; 0: all time)
WINDOWS = (("1m", 60), ("1h", 3600), ("1d", 86400), ("all", 0))
#: `per` rows of one window under the former name, keys unique within each start
FILL = (
    "INSERT INTO metric_rows (by, win, start, key, partition, seq, closures) "
    "SELECT {m}, {m}, {m} * (v / 90000), (v / 9) || '|' || (v %% 9) || '|' || (v %% 5) || '|WHATSAPP', "
    "-1, 1, 1 FROM {series}"
)
SQLITE_SERIES = (
    "(WITH RECURSIVE n(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM n WHERE v < {m}) SELECT v FROM n)"
)


def former_name() -> str:
    ((old, _),) = upgrade.renamed(REGISTRY)
    return old


def fill(execute: Callable[[str, tuple[Any, ...]], object], mark: str, rows: int, series: str) -> None:
    per = rows // len(WINDOWS)
    sql = FILL.format(m=mark, series=series.format(m=mark))
    if mark == "?":
        sql = sql.replace("%%", "%")
    for win, step in WINDOWS:
        execute(sql, (former_name(), win, step, per - 1))
    execute(f"UPDATE meta SET value = '1' WHERE name = {mark}", (store_format.META_NAME,))


@contextlib.contextmanager
def sqlite_store(rows: int) -> Iterator[tuple[Callable[[], object], Callable[[], str]]]:
    with tempfile.TemporaryDirectory(prefix="bench-upgrade-") as tmp:
        path = str(Path(tmp) / "metrics.db")
        SqliteStore(path).close()
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN")
        fill(db.execute, "?", rows, SQLITE_SERIES)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        yield (lambda: SqliteStore(path).close()), (lambda: f"{Path(path).stat().st_size / 1e6:,.0f} MB file")


@contextlib.contextmanager
def postgres_store(rows: int) -> Iterator[tuple[Callable[[], object], Callable[[], str]]]:
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' PostgreSQL helper: same server, same way
    import psycopg

    from consumer.store.postgres import PostgresStore
    from support.postgres import postgres_server

    with postgres_server() as server:
        url = server.new_database("bench_upgrade")
        PostgresStore(url).close()
        with psycopg.connect(url) as conn:
            fill(conn.execute, "%s", rows, "generate_series(0, %s) AS v")
            conn.execute("DELETE FROM meta WHERE name LIKE 'schema %%'")
            conn.commit()
            conn.execute("ANALYZE metric_rows")
            (size,) = conn.execute("SELECT pg_total_relation_size('metric_rows')").fetchone() or (0,)

        yield (lambda: PostgresStore(url).close()), (lambda: f"{size / 1e6:,.0f} MB metric_rows before")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rows", type=int, default=2_000_000, help="source rows under the former name (default 2,000,000)"
    )
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    if args.rows < len(WINDOWS):
        ap.error(f"--rows: at least {len(WINDOWS)}, one per window")
    logging.basicConfig(level=logging.INFO, format="  %(asctime)s %(message)s")
    logging.getLogger("consumer.store").setLevel(logging.INFO)
    print(f"machine: {machine()}; load average {loadavg()}")
    make = sqlite_store if args.store == "sqlite" else postgres_store
    started = time.perf_counter()
    with make(args.rows) as (open_store, size):
        made = time.perf_counter() - started
        print(f"{args.store}: {args.rows:,} rows of format 1 made in {made:.1f} s; {size()}")
        started = time.perf_counter()
        open_store()
        took = time.perf_counter() - started
    print(
        f"{args.store}: opened (renamed) in {took:.1f} s, {took / args.rows * 1e6:.1f} s per million rows; "
        f"load average {loadavg()}"
    )


if __name__ == "__main__":
    main()
