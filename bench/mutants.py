"""Plant mutants in the rules that decide what is counted, run the tests that should notice,
and write which were killed to bench/results/mutants.md.

Scope (issue 20): the fold's rules (reference consumer/fold and the compiled consumer/native),
the window arithmetic, the stores' retention, the API's query parsing, the metrics queries'
key filters, the SLA bucket bounds and the gateway's key check. Each mutant is one
small textual change at a rule's boundary (`<` for `<=`, bisect_right for bisect_left, ...),
listed below with the rule it breaks and the tests that must fail. Why a list and not
mutmut or cosmic-ray: see docs/development.md ("Mutation testing").

    .venv/bin/python bench/mutants.py           # the Python mutants (a few minutes)
    .venv/bin/python bench/mutants.py --rust    # and the compiled fold's (a rebuild each)

Each test run and build takes the machine's CPU lock (/tmp/convmetrics-cpu.lock) shared
itself: run the script without an outer `flock -x` on it (that would wait forever).

A mutant is applied to the checkout, the tests run, and the file is restored (also on
Ctrl-C); --rust rebuilds the compiled fold per mutant into build/mutants-target (without
LTO) and puts the checkout's own build back at the end. Slow (minutes): not part of CI.
"""

# ruff: noqa: E501  (the mutants are a table of code snippets, one mutant to a few lines)
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "mutants.md"

FOLD = ["tests/unit/consumer/test_fold.py", "tests/unit/consumer/test_fold_boundaries.py"]
STORE = ["tests/unit/consumer/test_store.py"]
QUERY = ["tests/unit/consumer/test_query.py", "tests/unit/consumer/test_api.py"]
PROPERTIES = ["tests/unit/consumer/test_api_properties.py"]
PG_STORE = ["tests/integration/test_postgres_store.py"]
LOCK = "/tmp/convmetrics-cpu.lock"  # docs/development.md: tests take it shared, benchmarks exclusive


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    rule: str
    tests: list[str]
    #: why it cannot change any answer, when it is equivalent (then surviving is expected)
    equivalent: str = ""


PYTHON = [
    Mutant("latest-start-exclusive", "consumer/fold/reference.py", "i = bisect_right(starts, t)\n            start",
           "i = bisect_right(starts, t - 1)\n            start", "start at or before closedAt (a same-second start)", FOLD),
    Mutant("correct-later-close-only", "consumer/fold/reference.py", "if closed_at < new_start or",
           "if closed_at <= new_start or", "a late start in the close second corrects the closure", FOLD),
    Mutant("correct-equal-start", "consumer/fold/reference.py", "start is not None and start >= new_start",
           "start is not None and start > new_start", "a late start at the current start changes nothing", FOLD),
    Mutant("dedupe-one-short", "consumer/fold/reference.py", "if len(seen) > self.max_seen:",
           "if len(seen) >= self.max_seen:", "exactly max_seen ids remembered", FOLD),
    Mutant("unread-at-equal-times", "consumer/fold/reference.py", "last_read is None or last_read < last_inbound",
           "last_read is None or last_read <= last_inbound", "read in the second of the last message is read", FOLD),
    Mutant("unread-inbound-zero", "consumer/fold/reference.py", "(last_inbound is not None and (",
           "(bool(last_inbound) and (", "an inbound message at time 0 is a message", FOLD),
    Mutant("window-expired-at-close", "consumer/fold/reference.py", "window_expires is not None and window_expires < t",
           "window_expires is not None and window_expires <= t", "a window expiring at closedAt is not expired",
           [*FOLD, "tests/unit/consumer/test_metrics_api.py"]),
    Mutant("expire-at-ttl", "consumer/fold/reference.py", "if last_time_of(b) < horizon]",
           "if last_time_of(b) <= horizon]", "idle exactly ttl seconds is kept", FOLD),
    Mutant("cap-at-max", "consumer/fold/reference.py", "len(self.idle) > max_conversations:",
           "len(self.idle) >= max_conversations:", "exactly max_conversations kept", FOLD,
           equivalent="at len == max the branch removes by_age[:0], nothing: the same as not entering it"),
    Mutant("range-check-start", "consumer/fold/state.py", "i = bisect_right(starts, t)\n        if i:",
           "i = bisect_right(starts, t - 1)\n        if i:", "the range check measures from the start apply uses", FOLD),
    Mutant("window-floor-negative", "consumer/fold/delta.py", "starts = [(name, t - t % size)",
           "starts = [(name, t - abs(t) % size)", "windows floor before the epoch too", FOLD),
    Mutant("window-floor-division", "consumer/fold/delta.py", "starts = [(name, t - t % size)",
           "starts = [(name, t // size * size)", "windows floor to their size", FOLD,
           equivalent="Python's // floors and % takes the divisor's sign: t // s * s == t - t % s for every int"),
    Mutant("lag-hour-floor-negative", "consumer/fold/delta.py", "key = (channel_type, t - t % 3600)",
           "key = (channel_type, t - abs(t) % 3600)", "the ingest lag's hour floors before the epoch too", FOLD),
    Mutant("window-end", "consumer/fold/windows.py", "return start, start + size",
           "return start, start + size - 1", "a window ends where the next starts", QUERY),
    Mutant("purge-cutoff", "consumer/store/sqlgen/purged.py", "AND win = ? AND start < ?\"",
           "AND win = ? AND start <= ?\"", "a row starting at the cutoff stays (both stores)",
           [*STORE, f"{PG_STORE[0]}::test_purge_cutoff_is_the_newest_watermark_minus_retention"]),
    Mutant("sqlite-purge-all-time", "consumer/store/sqlite/store.py", "if keep is None or win == ALL:\n                    continue\n                now",
           "if keep is None:\n                    continue\n                now", "all-time rows are never purged", STORE),
    Mutant("purged-row-cutoff", "consumer/store/sqlgen/purged.py", "OR {start} >= {int(s)})",
           "OR {start} > {int(s)})", "a late event still counts in the row starting at the purge's cutoff",
           [f"{STORE[0]}::test_a_late_event_makes_no_purged_row_again"]),
    Mutant("sqlite-purged-row-made-again", "consumer/store/sqlite/commit.py", "retained = sqlgen.retained(hz, \"c1\", \"c2\")",
           "retained = \"true\"", "a late event makes no purged row again",
           [f"{STORE[0]}::test_a_late_event_makes_no_purged_row_again"]),
    Mutant("query-64-bits", "consumer/serve/query.py", "not I64_MIN <= int(raw) <= I64_MAX:",
           "not I64_MIN <= int(raw) <= I64_MAX + 1:", "integers beyond 64 bits are a 400", [*QUERY, *PROPERTIES]),
    Mutant("query-from-equals-to", "consumer/serve/query.py", "start_to is not None and start_to < start_from:",
           "start_to is not None and start_to <= start_from:", "from == to selects one window (/v1/closures, /v1/metrics)",
           [*QUERY, "tests/unit/consumer/test_metrics_api.py"]),
    Mutant("query-limit-one", "consumer/serve/query.py", "if not 1 <= limit <= MAX_LIMIT:",
           "if not 1 < limit <= MAX_LIMIT:", "limit=1 is a page of one", QUERY),
    Mutant("query-limit-max", "consumer/serve/query.py", "if not 1 <= limit <= MAX_LIMIT:",
           "if not 1 <= limit < MAX_LIMIT:", "limit=MAX_LIMIT is allowed", QUERY),
    Mutant("query-max-keys", "consumer/serve/query.py", "if len(keys) > MAX_KEYS:",
           "if len(keys) >= MAX_KEYS:", "MAX_KEYS keys are allowed", QUERY),
    Mutant("cursor-64-bits", "consumer/serve/query.py", "or not I64_MIN <= start <= I64_MAX:\n            raise ValueError",
           "or not I64_MIN <= start <= I64_MAX + 1:\n            raise ValueError", "a cursor beyond 64 bits is a 400",
           [*QUERY, *PROPERTIES]),
    Mutant("first-close-same-second-id", "consumer/fold/reference.py", "first[F_ID] is not None and event_id < first[F_ID]",
           "first[F_ID] is not None and event_id > first[F_ID]", "of same-second closures the smaller event id is the first", FOLD),
    Mutant("first-assignment-at-created", "consumer/fold/state.py", "if a[A_TIME] >= created:",
           "if a[A_TIME] > created:", "an assignment in the created second counts (0 s)", FOLD),
    Mutant("sla-bucket-bound", "consumer/store/rollup.py", "(hi is None or v <= hi)", "(hi is None or v < hi)",
           "a duration equal to a bucket's bound is in that bucket", [*STORE, "tests/unit/consumer/test_rollup.py"]),
    Mutant("channel-type-filter-first-pipe", "consumer/store/rows.py",
           "= {mark} AND {position}(key, '|') = {start}\")", "= {mark}\")",
           "a channel_type filter matches the whole name (CHAT is not 7|WEB|CHAT)", STORE),
    Mutant("sla-bucket-longest", "consumer/fold/registry/declared.py", "int(digits) * unit > MAX_SLA_SECONDS:",
           "int(digits) * unit >= MAX_SLA_SECONDS:", "a bucket bound of exactly ten years (3650d) is allowed",
           ["tests/unit/consumer/test_registry.py"]),
    Mutant("sla-bucket-ascii-digits", "consumer/fold/registry/declared.py",
           "not (digits.isascii() and digits.isdigit())", "not digits.isdigit()",
           "a bucket bound takes ASCII digits only", ["tests/unit/consumer/test_registry.py"]),
    Mutant("key-check-not-leader", "producer/topics.py", "        KafkaError.NOT_LEADER_FOR_PARTITION,\n", "",
           "the key check asks a partition again while its leader settles", ["tests/unit/producer/test_topics.py"]),
    Mutant("derived-text-last-whole", "consumer/store/sqlgen/derived.py", "if i == len(dims) - 1:",
           "if i == len(dims) - 1 and False:", "a derived key keeps a channel type holding `|` whole", STORE),
    Mutant("derived-optional-present", "consumer/store/sqlgen/derived.py", "f\" AND {parts[dim]} <> ''\"",
           "f\"\"", "a source row without an inbox is in no inbox row", STORE),
    Mutant("derived-bounds-source", "consumer/store/sqlgen/derived.py",
           "return registry.grouping(g.derived_from).dimensions[0] == g.dimensions[0]", "return False",
           "one account's derived rows are a range of their source's key", STORE),
]  # fmt: skip

NATIVE_FOLD = [*FOLD, "tests/unit/consumer/test_fold_native.py"]
RUST = [
    Mutant("rust-latest-start-exclusive", "consumer/native/src/lib.rs",
           "let i = conv.starts.partition_point(|&s| s <= t);\n            let start",
           "let i = conv.starts.partition_point(|&s| s < t);\n            let start",
           "start at or before closedAt (a same-second start)", NATIVE_FOLD),
    Mutant("rust-correct-later-close-only", "consumer/native/src/lib.rs", "if c.closed < t || c.start",
           "if c.closed <= t || c.start", "a late start in the close second corrects the closure", NATIVE_FOLD),
    Mutant("rust-unread-at-equal-times", "consumer/native/src/lib.rs", "(Some(inbound), Some(read)) => read < inbound,",
           "(Some(inbound), Some(read)) => read <= inbound,", "read in the second of the last message is read",
           NATIVE_FOLD),
    Mutant("rust-dedupe-one-short", "consumer/native/src/lib.rs", "if conv.seen.len() > *max_seen {",
           "if conv.seen.len() >= *max_seen {", "exactly max_seen ids remembered", NATIVE_FOLD),
    Mutant("rust-expire-at-ttl", "consumer/native/src/lib.rs", ".filter(|(t, _)| *t < horizon)",
           ".filter(|(t, _)| *t <= horizon)", "idle exactly ttl seconds is kept", NATIVE_FOLD),
    Mutant("rust-first-close-same-second-id", "consumer/native/src/lib.rs", "is_some_and(|o| id < o)",
           "is_some_and(|o| id > o)", "of same-second closures the smaller event id is the first", NATIVE_FOLD),
    Mutant("rust-first-assignment-at-created", "consumer/native/src/lib.rs", "position(|a| a.t >= created)",
           "position(|a| a.t > created)", "an assignment in the created second counts (0 s)", NATIVE_FOLD),
    Mutant("rust-rollup-bucket-bound", "consumer/native/src/rollup.rs", "hi.is_none_or(|hi| x <= hi)",
           "hi.is_none_or(|hi| x < hi)", "a duration equal to a bucket's bound is in that bucket (compiled rollup)",
           ["tests/unit/consumer/test_rollup.py", *STORE]),
    Mutant("rust-window-expired-at-close", "consumer/native/src/lib.rs", "e.window_expires.is_some_and(|w| w < t)",
           "e.window_expires.is_some_and(|w| w <= t)", "a window expiring at closedAt is not expired", NATIVE_FOLD),
    Mutant("rust-correct-equal-start", "consumer/native/src/lib.rs", "c.start.is_some_and(|s| s >= t)",
           "c.start.is_some_and(|s| s > t)", "a late start at the current start changes nothing", NATIVE_FOLD),
    Mutant("rust-range-check-start", "consumer/native/src/lib.rs",
           "let i = conv.starts.partition_point(|&s| s <= t);\n        if i > 0",
           "let i = conv.starts.partition_point(|&s| s < t);\n        if i > 0",
           "the range check measures from the start apply uses", NATIVE_FOLD),
    Mutant("rust-cap-at-max", "consumer/native/src/lib.rs", "&& self.idle.len() > most",
           "&& self.idle.len() >= most", "exactly max_conversations kept", NATIVE_FOLD,
           equivalent="at len == most the expired are gone already, so by_age keeps len == most and over = 0: nothing removed, as without entering"),
    Mutant("rust-window-floor-negative", "consumer/native/src/lib.rs", "t.checked_sub(t.rem_euclid(size))",
           "t.checked_sub(t % size)", "the ingest lag's hour floors before the epoch too", NATIVE_FOLD),
]  # fmt: skip


def run_tests(tests: list[str]) -> tuple[bool, str]:
    """(killed, the first failing test or why) for one mutant."""
    files = sorted({t.split("::")[0] for t in tests})
    missing = [f for f in files if not (ROOT / f).exists()]
    tests = [t for t in tests if t.split("::")[0] not in missing]
    if not tests:
        return False, f"no test file of {missing}"
    lock = (
        ["flock", "-s", LOCK] if shutil.which("flock") else []
    )  # a shared machine: tests share the CPU lock
    out = subprocess.run(
        [*lock, sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    # a node id may hold spaces (a parametrized id); pytest puts " - " before the reason
    failed = [
        line.split(" ", 1)[1].split(" - ")[0]
        for line in out.stdout.splitlines()
        if line.startswith(("FAILED ", "ERROR "))
    ]
    if out.returncode == 0:
        return False, "every test passed"
    for broken in ("NameError", "SyntaxError", "ImportError"):  # a mutant that does not run proves nothing
        if f"E   {broken}" in out.stdout or f"E       {broken}" in out.stdout:
            raise SystemExit(
                f"the mutant does not run ({broken}): fix it in bench/mutants.py\n{out.stdout[-2000:]}"
            )
    return True, failed[0] if failed else f"pytest exit {out.returncode}"


def native_so() -> Path:
    return ROOT / "consumer" / "fold" / ("_fold_native" + str(sysconfig.get_config_var("EXT_SUFFIX")))


def build_rust() -> None:
    """Compile the (mutated) crate without LTO into its own target dir and put it in place."""
    target = ROOT / "build" / "mutants-target"
    env = {**os.environ, "CARGO_TARGET_DIR": str(target), "PYO3_PYTHON": sys.executable,
           "CARGO_PROFILE_RELEASE_LTO": "false"}  # fmt: skip
    lock = ["flock", "-s", LOCK] if shutil.which("flock") else []  # a build is CPU work like a test run
    subprocess.run([*lock, "cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT / "consumer" / "native",
                   env=env, check=True)  # fmt: skip
    shutil.copyfile(target / "release" / "lib_fold_native.so", native_so())


def plant(m: Mutant, *, rust: bool) -> tuple[bool, str]:
    path = ROOT / m.path
    original = path.read_text()
    if original.count(m.old) != 1:
        raise SystemExit(
            f"{m.name}: the text to mutate is not found once in {m.path}: update bench/mutants.py"
        )
    try:
        path.write_text(original.replace(m.old, m.new))
        if rust:
            build_rust()
        return run_tests(m.tests)
    finally:
        path.write_text(original)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rust", action="store_true", help="also the compiled fold's mutants (a rebuild each)")
    p.add_argument(
        "--only", help="run the mutants whose name contains this (or one of these, comma-separated)"
    )
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` restores the file
    mutated = sorted({m.path for m in (*PYTHON, *RUST)})
    if subprocess.run(["git", "diff", "--quiet", "--", *mutated], cwd=ROOT).returncode != 0:
        raise SystemExit(
            "a file the mutants change has uncommitted changes: commit or stash them first "
            "(mutants restore files)"
        )
    mutants = [(m, False) for m in PYTHON] + ([(m, True) for m in RUST] if args.rust else [])
    mutants = [(m, r) for m, r in mutants if not args.only or any(o in m.name for o in args.only.split(","))]
    original_so = native_so().read_bytes() if args.rust else None
    rows = []
    started = time.monotonic()
    try:
        for m, rust in mutants:
            killed, why = plant(m, rust=rust)
            verdict = "killed" if killed else ("equivalent" if m.equivalent else "SURVIVED")
            print(f"{verdict:10} {m.name}: {why}", flush=True)
            rows.append((m, verdict, why))
            write_results(rows, args, time.monotonic() - started)  # a stopped run keeps its part
    finally:
        if original_so is not None:
            native_so().write_bytes(original_so)
    survivors = [m.name for m, v, _ in rows if v == "SURVIVED"]
    write_results(rows, args, time.monotonic() - started)
    print(
        f"{len(rows)} mutants, {len(survivors)} unexplained survivors: {survivors}; see {RESULTS.relative_to(ROOT)}"
    )
    return 1 if survivors else 0


def write_results(rows: list[tuple[Mutant, str, str]], args: argparse.Namespace, seconds: float) -> None:
    """The table of this run; with --only, the other mutants' rows of the last results stay
    (marked as earlier), and so do the notes under the table."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    lines = [
        "# Mutants planted in the counting rules (bench/mutants.py)",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d} at commit {commit.stdout.strip()}, "
        f"`bench/mutants.py{' --rust' if args.rust else ''}{f' --only {args.only}' if args.only else ''}`, "
        f"{seconds / 60:.1f} min. A mutant is killed when a listed test fails with it planted.",
        "",
        "| mutant | file | rule it breaks | result | failing test, or why equivalent |",
        "| --- | --- | --- | --- | --- |",
    ]
    earlier, notes = _last_results() if args.only else ({}, [])
    if earlier:
        lines[2] += " Rows marked (earlier) are from the run before, not this one."
    ran = {m.name: (m, verdict, why) for m, verdict, why in rows}
    for m in [*PYTHON, *RUST]:
        if m.name in ran:
            _, verdict, why = ran[m.name]
            cells = (m.name, f"`{m.path}`", m.rule, verdict, m.equivalent or f"`{why}`")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        elif m.name in earlier:
            lines.append(earlier[m.name].replace(" |", " (earlier) |", 1))
    RESULTS.write_text("\n".join([*lines, *notes]) + "\n")


def _last_results() -> tuple[dict[str, str], list[str]]:
    """The last results' table rows by mutant name (unmarked), and the lines after the table."""
    text = RESULTS.read_text().splitlines() if RESULTS.exists() else []
    table = [i for i, line in enumerate(text) if line.startswith("| ")]
    rows = {}
    for i in table[2:]:  # past the header and its rule
        line = text[i].replace(" (earlier) |", " |", 1)
        rows[line.split(" | ")[0].removeprefix("| ")] = line
    return rows, text[table[-1] + 1 :] if table else []


if __name__ == "__main__":
    sys.exit(main())
