"""Query cost of the API as the dashboard calls it, on a store with 10,000 accounts and a day
of 1-minute rows on 6 partitions.

    .venv/bin/python bench/query.py [--accounts 10000] [--closures-per-account 20] [--calls 40]
                                    [--store sqlite|postgres]

Builds a SQLite store (the fold and the store, no Kafka: the store's contents are what
matter) from a generated day: every account's conversations on its partition (events are
keyed by account, as the gateway keys them), each created and closed within the day.
Then serves it with `convmetrics serve`'s app on a real port (uvicorn, in a thread) and
times, over HTTP, each request one dashboard refresh makes: `/v1/summary`, the channel
types' rows of the shown hour (1-minute window) and of the shown day (1-hour window), each
as the page asks for it (every channel type's counters, and one channel type's time to
close: `fields`) and, for comparison, whole (every metric of every channel type, as the
page asked before `fields`); the account table's 100 busiest accounts (ranked in the API)
and a search in it; one account's channel types with every metric (`/v1/metrics`, the
grouped table), the live backlog and an account's closure list (the drill-down); and, for
comparison, an export of every account's all-time row (paged 10,000 at a time), which the
dashboard no longer makes. The store holds the full metric set and is served as that;
`/v1/summary` and `/v1/closures` are also timed against it served as the closures set (the
default), alternately in the same run, which separates the cost of serving the full set
from the machine's day. The calls run with the cyclic GC's thresholds `convmetrics serve`
sets (consumer/heap.py). `--store postgres` builds and serves the same on a local
PostgreSQL (analyzed after the build, as autovacuum would). Prints p50/p99 per request;
writes bench/results/query.md (query-postgres.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the project before bench/ (its consumer.py)

from consumer.fold import PartitionFold  # noqa: E402
from consumer.fold.model import CLOSED, CREATED, Event  # noqa: E402
from consumer.fold.native import choose  # noqa: E402
from consumer.fold.registry import METRIC_SETS  # noqa: E402
from consumer.heap import rare_collections  # noqa: E402
from consumer.serve.server import serve_in_thread  # noqa: E402
from consumer.store import PartitionCommit, open_store  # noqa: E402
from support.postgres import postgres_server  # noqa: E402

DAY = 1_700_006_400  # a UTC midnight
CHANNELS = ["TELEGRAM", "VIBER", "LINE", "CLOUD_WABA", "TWILIO_SMS", "GBM", "VBM", "ABM"]
PARTITIONS = 6
#: the metric sets the store is served as: the one it holds first
SETS = ("full", "closures")
#: not a dashboard call (the page ranks and cuts the account table in the API): what an
#: export of every account costs, for comparison
EXPORT = "/v1/closures accounts, all time, every page (an export)"
HOUR_WHOLE = "/v1/closures channel types, 1m, the shown hour, every metric (the page before `fields`)"
DAY_WHOLE = "/v1/closures channel types, 1h, the shown day, every metric (the page before `fields`)"
#: each chart's calls as the page makes them (in parallel), and the whole call they replace
CHART_CALLS = {
    HOUR_WHOLE: (
        "/v1/closures channel types, 1m, the shown hour: counters",
        "/v1/closures channel types, 1m, the shown hour: one's time to close",
    ),
    DAY_WHOLE: (
        "/v1/closures channel types, 1h, the shown day: counters",
        "/v1/closures channel types, 1h, the shown day: one's time to close",
    ),
}
#: one account's rows of a day with a bounded span (its starts listed), and the same rows
#: asked for from a start on only (the span read as a range of every key's rows): the
#: baseline of the first, in the same run
LISTED = "/v1/metrics one account's channel types, 1h, the day (every metric)"
RANGED = "/v1/metrics the same, from only (no to: the span read as a range)"


def build(url: str, accounts: int, per_account: int, seed: int = 7) -> int:
    """A day of conversations into the store at `url`: returns the events folded."""
    rnd = random.Random(seed)
    kind = choose()
    folds = {p: kind.new(p) if kind.name == "native" else PartitionFold(p) for p in range(PARTITIONS)}
    events: list[tuple[int, Event]] = []
    h = 0
    for a in range(1, accounts + 1):
        for c in range(per_account):
            conv = a * 1000 + c
            start = DAY + rnd.randrange(86_000)
            ch = CHANNELS[(a + c) % len(CHANNELS)]
            p = zlib.crc32(str(a).encode()) % PARTITIONS  # the gateway's key: the account
            h += 2
            events.append((p, Event(CREATED, h, a, conv, ch, start, None, None)))
            closed = min(start + rnd.randrange(1, 7200), DAY + 86_399)
            events.append((p, Event(CLOSED, h + 1, a, conv, ch, closed)))
    events.sort(key=lambda pe: pe[1].time)
    store = open_store(url)
    store.check_topic("bench")
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    for i in range(0, len(events), 50_000):
        for p, e in events[i : i + 50_000]:
            folds[p].apply(e)
            offsets[p] += 1
        commits = []
        for p, f in folds.items():
            delta, changed = f.take_changes()
            commits.append(PartitionCommit(p, delta, offsets[p], f.watermark, changed))
        store.commit("bench", commits)
    store.close()
    count = "SELECT win, count(*) FROM metric_rows GROUP BY win"
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            rows = db.execute(count).fetchall()
    else:
        # what autovacuum does within about a minute of a table's first rows
        # (docs/operations.md): the reads are planned with statistics, as on a live database
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("ANALYZE")
            rows = pg.execute(count).fetchall()
    print("stored rows per window (with their partitions):", dict(rows), flush=True)
    return len(events)


def timed(client: httpx.Client, path: str, params: dict[str, str]) -> float:
    """One call, following `next` through every page, except for a ranked table (`sort`):
    the dashboard shows its first page only."""
    started = time.perf_counter()
    query = dict(params)
    while True:
        r = client.get(path, params=query)
        r.raise_for_status()
        body = r.json()
        if not body.get("next") or "sort" in params:
            break
        query["cursor"] = body["next"]
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--closures-per-account", type=int, default=20)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite (the default; bench/results/query.md) or a local PostgreSQL "
        "(tests/support/postgres.py; bench/results/query-postgres.md)",
    )
    args = ap.parse_args()
    if args.store == "sqlite":
        measure(f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-query-')) / 'm.db'}", args)
        return
    with postgres_server() as pg:
        measure(pg.new_database("query"), args)


def measure(url: str, args: argparse.Namespace) -> None:
    """Build the store at `url`, serve it, time the calls, write the results."""
    t0 = time.perf_counter()
    n = build(url, args.accounts, args.closures_per_account)
    print(f"built: {n:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
    # the store holds the full metric set (the folds' and the store's default registry);
    # served as that, and (the calls the closures set answers too) as the closures set,
    # alternately in the same run: what serving the full set costs, apart from the machine
    servers = {name: serve_in_thread(url, "127.0.0.1", 0, metrics=METRIC_SETS[name])[0] for name in SETS}
    while not all(s.started for s in servers.values()):
        time.sleep(0.05)
    ports = {name: s.servers[0].sockets[0].getsockname()[1] for name, s in servers.items()}
    newest_minute = DAY + 86_340
    hour = {"by": "channel_type", "window": "1m", "from": str(newest_minute - 59 * 60), "limit": "10000"}
    day = {"by": "channel_type", "window": "1h", "from": str(DAY), "limit": "10000"}
    # each chart's rows, as the dashboard asks for them: every channel type's counters, and
    # the charted one's time to close (the page's `fields`)
    counters, charted = {"fields": "closures,closed_unread"}, {"key": CHANNELS[0], "fields": "time_to_close"}
    calls = {
        "/v1/summary": ("/v1/summary", {}),
        CHART_CALLS[HOUR_WHOLE][0]: ("/v1/closures", hour | counters),
        CHART_CALLS[HOUR_WHOLE][1]: ("/v1/closures", hour | charted),
        CHART_CALLS[DAY_WHOLE][0]: ("/v1/closures", day | counters),
        CHART_CALLS[DAY_WHOLE][1]: ("/v1/closures", day | charted),
        # for comparison: every metric of every channel type, as the page asked before `fields`
        HOUR_WHOLE: ("/v1/closures", hour),
        DAY_WHOLE: ("/v1/closures", day),
        "/v1/closures accounts, all time, the table's 100 busiest (sort=-closures)": (
            "/v1/closures",
            {"by": "account", "window": "all", "sort": "-closures", "limit": "100"},
        ),
        "/v1/closures accounts, all time, searched (contains=42, sort=-closed_unread/closures)": (
            "/v1/closures",
            {
                "by": "account",
                "window": "all",
                "sort": "-closed_unread/closures",
                "contains": "42",
                "limit": "100",
            },
        ),
        LISTED: (
            "/v1/metrics",
            {
                "group": "account,channel_type",
                "window": "1h",
                "account": "4242",
                "from": str(DAY),
                "to": str(DAY + 86_400),
                "limit": "10000",
            },
        ),
        # the same rows asked for without `to`: the span is read as a range of the primary
        # key (every account's rows of the day), as before listed starts; the baseline of the line above
        RANGED: (
            "/v1/metrics",
            {
                "group": "account,channel_type",
                "window": "1h",
                "account": "4242",
                "from": str(DAY),
                "limit": "10000",
            },
        ),
        # the account's own hourly rows: in the full set, read from its source grouping's
        # rows (its channel types', as the line above), not stored
        "/v1/metrics one account, 1h, the day (derived from the source rows)": (
            "/v1/metrics",
            {
                "group": "account",
                "window": "1h",
                "account": "4242",
                "from": str(DAY),
                "to": str(DAY + 86_400),
                "limit": "10000",
            },
        ),
        "/v1/backlog channel types": ("/v1/backlog", {"group": "channel_type"}),
        "/v1/closures/conversations one account's day (its drill-down list)": (
            "/v1/closures/conversations",
            {"account": "4242", "from": str(DAY), "to": str(DAY + 86_400), "limit": "100"},
        ),
        EXPORT: ("/v1/closures", {"by": "account", "window": "all", "limit": "10000"}),
    }
    results: dict[tuple[str, str], list[float]] = {}
    clients = {
        name: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) for name, port in ports.items()
    }
    both = [name for name, (path, _) in calls.items() if path in ("/v1/summary", "/v1/closures")]
    plan = [(s, name) for name in calls for s in (SETS if name in both else SETS[:1])]
    # the collector's thresholds `convmetrics serve` runs the API with (consumer/heap.py)
    with rare_collections():
        for s, name in plan:  # warm: the first call opens the store
            timed(clients[s], *calls[name])
        for _ in range(args.calls):
            for s, name in plan:
                results.setdefault((s, name), []).append(timed(clients[s], *calls[name]))
    for c in clients.values():
        c.close()
    for server in servers.values():
        server.should_exit = True

    kind = "SQLite" if args.store == "sqlite" else "PostgreSQL (local, after `ANALYZE`)"

    def p(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] * 1000

    lines = [
        "# API query cost as the dashboard calls it",
        "",
        f"`.venv/bin/python bench/query.py --accounts {args.accounts} --closures-per-account "
        f"{args.closures_per_account} --calls {args.calls} --store {args.store}` on {datetime.date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; {kind} store of {n:,} events over one day, "
        f"{args.accounts:,} accounts, {len(CHANNELS)} channel types, {PARTITIONS} partitions; over HTTP "
        "(uvicorn), one client, requests in sequence, with the cyclic GC's thresholds `convmetrics serve`",
        "runs the API with (`consumer/heap.py`).",
        "",
        "The store holds the full metric set and is served as that; the calls the closures set",
        "answers too are also timed against the same store served as the closures set (the",
        "default), alternately in the same run.",
        "",
        "| request | p50 ms | p99 ms | served as the closures set: p50, p99 ms | target p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in calls:
        xs, base = results[(SETS[0], name)], results.get((SETS[1], name))
        target = "none" if name in (EXPORT, RANGED, HOUR_WHOLE, DAY_WHOLE) else "50"
        other = f"{p(base, 50):.1f}, {p(base, 99):.1f}" if base else "-"
        lines.append(f"| {name} | {p(xs, 50):.1f} | {p(xs, 99):.1f} | {other} | {target} |")
    listed, ranged = results[(SETS[0], LISTED)], results[(SETS[0], RANGED)]
    lines += [
        "",
        f"One account's day, its starts listed against the span read as a range: p50 "
        f"{p(ranged, 50) / p(listed, 50):.1f}x, p99 {p(ranged, 99) / p(listed, 99):.1f}x faster.",
    ]
    for whole, parts in CHART_CALLS.items():
        asked, once = sum(p(results[(SETS[0], name)], 50) for name in parts), p(results[(SETS[0], whole)], 50)
        lines.append(
            f"{whole}: as the page asks for it ({len(parts)} calls, in parallel on the page) p50 "
            f"{asked:.1f} ms one after the other, against {once:.1f} ms whole."
        )
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f}.", ""]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / ("query.md" if args.store == "sqlite" else "query-postgres.md")
    out.write_text(text)


if __name__ == "__main__":
    main()
