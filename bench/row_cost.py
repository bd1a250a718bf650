"""What one metric row costs SQLite to write, by the row's width: the floor under the SQLite
store's commit (bench/pipeline.py --statements shows the commit's upserts by grouping and
window; this shows what each of their rows costs).

    .venv/bin/python bench/row_cost.py [--rows 35000] [--fill 30] [--rounds 3] [--metric-set full]

On a fresh store file (the store's pragmas, the compiled `packed_rows` table), `--fill`
payloads of `--rows` rows fill the metric-row table first; then, alternating, `--rounds`
times each: a payload of `--rows` new rows (the next minutes, in key order, as a commit's
1-minute rows arrive) upserted into the registry's metric-row table as the store's commit
does; the same rows inserted without the ON CONFLICT clause; into a table of the same
5-column key with 2 values (the baseline: a narrow row); into an unindexed table of the
full width (reading `packed_rows` and making the record, without the key's B-tree); a
row of the same key whose values are one blob (a stand-in for values packed by the
compiled part: the merge is SQLite's `max`, not a sum per value). Then the same, upserted
a second time into rows that exist (merged, as a commit's 1h, 1d and all-time rows are).
Prints µs per row (median of the rounds) and the ratio to the narrow row. Wall-clock: run
it alone. Figures: bench/results/consumer-full.md.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.fold.native import native  # noqa: E402
from consumer.fold.registry import METRIC_SETS, Registry  # noqa: E402
from consumer.store.sqlgen.dialect import merge_of  # noqa: E402
from consumer.store.sqlite import sql  # noqa: E402
from consumer.store.sqlite.bins import install, register  # noqa: E402
from consumer.store.sqlite.store import CONNECTION_PRAGMAS  # noqa: E402

NARROW = (
    "CREATE TABLE narrow (by TEXT NOT NULL, win TEXT NOT NULL, start INTEGER NOT NULL, key TEXT NOT NULL, "
    "partition INTEGER NOT NULL, a INTEGER, b INTEGER, seq INTEGER, bins BLOB, "
    "PRIMARY KEY (by, win, start, key, partition)) WITHOUT ROWID"
)
PACKED = NARROW.replace("narrow", "packed").replace("a INTEGER, b INTEGER", "vals BLOB")
PACKED_UPSERT = (
    "INSERT INTO packed AS r SELECT c0, c1, c2, c3, ?2, c4, ?3, c5 FROM packed_rows(?1) WHERE true "
    "ON CONFLICT (by, win, start, key, partition) DO UPDATE SET seq = excluded.seq, "
    "vals = max(r.vals, excluded.vals), bins = bins_merge(r.bins, excluded.bins)"
)


def rows(registry: Registry, by: str, start: int, n: int, keys: int, wide: bool | None) -> bytes:
    """`n` rows of `keys` keys a minute from `start`, in key order, packed for packed_rows:
    small counts, a distribution's statistics and one SLA bucket set (as a closure makes);
    narrow (False): 2 values; None: the values as one blob of a byte each."""
    out: list[tuple[object, ...]] = []
    for i in range(n):
        key = (by, "1m", start + 60 * (i // keys), f"{i % keys:05d}")
        if wide:  # the ingest lag's columns as an account's row has them: 0 and NULL
            vals = [
                (0 if merge_of(c, registry) == "sum" else None) if c.startswith("lag_") else 1 + (i + j) % 3
                for j, c in enumerate(registry.value_columns)
            ]
            out.append((*key, *vals, None))
        elif wide is None:
            out.append((*key, bytes(1 + (i + j) % 3 for j in range(len(registry.value_columns))), None))
        else:
            out.append((*key, 1, 100, None))
    return bytes(native.pack_rows(out, len(out[0])))


def minute(k: int) -> int:
    """The start of the k-th payload's minutes (100 minutes apart: never the same rows)."""
    return 1_700_000_000 + 60 * 100 * k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=35_000, help="rows per payload (default 35,000)")
    ap.add_argument("--fill", type=int, default=30, help="payloads written before timing (default 30)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--metric-set", choices=sorted(METRIC_SETS), default="full")
    args = ap.parse_args()
    if native is None or not install():
        sys.exit("row_cost: needs the compiled part (packed_rows): make setup")
    registry = METRIC_SETS[args.metric_set]
    st = sql.statements(registry)
    values = len(registry.value_columns)
    # the grouping that holds most of a full-set store's rows (its name leads every key)
    by = registry.sources[0].name if registry.sources else "account"
    plain = st.upsert_rolled[True].split(" WHERE true")[0]
    narrow = "INSERT INTO narrow SELECT c0, c1, c2, c3, ?2, c4, c5, ?3, c6 FROM packed_rows(?1)"
    kinds: dict[str, tuple[str, bool | None]] = {
        "upsert, full row (the commit's)": (st.upsert_rolled[True], True),
        "insert, full row": (plain, True),
        "insert, narrow row (baseline)": (narrow, False),
        "insert, full row, no key (rowid table)": (plain.replace("metric_rows AS r", "sink", 1), True),
        "upsert, values as one blob (stand-in)": (PACKED_UPSERT, None),
    }  # fmt: skip
    merged = ("upsert, full row (the commit's)", "upsert, values as one blob (stand-in)")
    with tempfile.TemporaryDirectory(prefix="bench-row-cost-") as tmp:
        db = sqlite3.connect(str(Path(tmp) / "rows.db"), isolation_level=None)
        for pragma in CONNECTION_PRAGMAS:
            db.execute(f"PRAGMA {pragma}")
        register(db, prefer="native")
        db.execute(st.rows)
        db.execute(NARROW)
        db.execute(PACKED)
        db.execute("CREATE TABLE sink AS SELECT * FROM metric_rows WHERE 0")

        def timed(statement: str, payload: bytes) -> float:
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute(statement, (payload, -1, 1)).fetchall()
            db.execute("COMMIT")
            return time.perf_counter() - started

        for k in range(args.fill):  # both tables as deep as a store that has run a while
            timed(st.upsert_rolled[True], rows(registry, by, minute(k), args.rows, 350, True))
            timed(narrow, rows(registry, by, minute(k), args.rows, 350, False))
            timed(PACKED_UPSERT, rows(registry, by, minute(k), args.rows, 350, None))
        print(
            f"{args.fill * args.rows:,} rows in each table; {args.rows:,} rows a payload, "
            f"{values} value columns"
        )
        seconds: dict[str, list[float]] = {name: [] for name in (*kinds, *(f"{m}, merged" for m in merged))}
        for r in range(args.rounds):
            for i, (name, (statement, wide)) in enumerate(kinds.items()):
                at = minute(args.fill + 1 + r * len(kinds) + i)  # new minutes each time
                payload = rows(registry, by, at, args.rows, 350, wide)
                seconds[name].append(timed(statement, payload))
                if name in merged:  # the same rows again: every one exists
                    seconds[f"{name}, merged"].append(timed(statement, payload))
        base = statistics.median(seconds["insert, narrow row (baseline)"])
        for name, s in seconds.items():
            med = statistics.median(s)
            print(f"  {name:50} {med / args.rows * 1e6:6.2f} µs/row  {med / base:5.2f}x the narrow row")


if __name__ == "__main__":
    main()
