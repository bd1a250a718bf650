"""Head-to-head: our consumer against Kafka Streams, Quix Streams and Faust on the same pre-produced topic.

    pip install -e ".[peers]"
    .venv/bin/python bench/peers/run.py                  # 200,000 events, 6 partitions, 2 runs each
    .venv/bin/python bench/peers/run.py --events 50000 --runs 1 --no-write

One broker (``CONVMETRICS_BOOTSTRAP_SERVERS``, else a local one, see bench/common.py), one
topic of generated events, then each implementation in its own process, one after
another, ``--runs`` rounds: ours (its default metric set, closures), Kafka Streams, Quix
Streams and Faust (the subset: closures per channel type per 1-minute event-time window,
closures per account; Kafka Streams also time to close per channel type). Prints
events/s (median of the runs), the ratios of ours to each, CPU seconds per million events
and peak RSS, cross-checks the peers' aggregates against a plain scan of the topic, and
writes bench/results/peers.md.
The Kafka Streams peer is built with Maven on first use (``kstreams_peer.py``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(HERE)]

from common import bench_kafka, end_offsets, ensure_events, loadavg, machine, median  # noqa: E402
from confluent_kafka import Consumer, KafkaError, TopicPartition, libversion  # noqa: E402
from kstreams_peer import AVRO_JAVA, EXPECTED_FILE, ensure_built  # noqa: E402
from peerlib import (  # noqa: E402
    GRACE_SECONDS,
    RESULT_FILE,
    Tally,
    TimeToClose,
    closure_of,
    minute_of,
    new_codec,
    output_lines,
    parse_output,
)

from consumer.fold.registry import DEFAULT_METRIC_SET  # noqa: E402
from convmetrics.generate import GenerateConfig  # noqa: E402
from convmetrics.localkafka.exceptions import JavaNotFoundError  # noqa: E402
from convmetrics.localkafka.jars import KAFKA_VERSION, find_java  # noqa: E402

RESULTS = ROOT / "bench/results/peers.md"
#: what ours computes with each metric set (`--metric-set`)
WHAT_OURS = {
    "closures": "its default metric set, closures (1m/1h/1d/all windows per channel type and per "
    "account, time-to-close sketches, reopen and unread counts, per-event dedupe, every closure "
    "row, exactly-once store commits to SQLite)",
    "full": "the full metric set (docs/metrics.md: eleven metrics and the backlog gauges per "
    "channel type and per account in 1m/1h/1d/all windows, per account and channel type, inbox "
    "and app in 1h/1d/all, per-event dedupe, every closure row, exactly-once store commits to "
    "SQLite)",
}
PEERS = {
    "ours": "ours_peer.py",
    "kstreams": "kstreams_peer.py",
    "quix": "quix_peer.py",
    "faust": "faust_peer.py",
}
LABELS = {
    "ours": "convmetrics consumer (closures metric set)",
    "kstreams": "Kafka Streams (subset + time to close)",
    "quix": "Quix Streams (subset)",
    "faust": "Faust (subset)",
}
PACKAGES = ("quixstreams", "faust-streaming", "aiokafka", "confluent-kafka", "rocksdict", "cavro", "fastavro")


def gen_config(events: int) -> GenerateConfig:
    """The shape bench/consumer.py uses: no noise events, so every record is a conversation event."""
    return GenerateConfig(
        seed=2024,
        events=events,
        accounts=10_000,
        conversations=max(1, events // 4),
        duplicate_rate=0.02,
        late_rate=0.02,
        unknown_channel_rate=0.01,
        noise_rate=0.0,
    )


#: The ratio targets of ours over each peer (events/s).
TARGETS = {"kstreams": 1.5, "quix": 3.0}
GRACE_DAYS = GRACE_SECONDS // 86_400
HEADER = (
    "| implementation | events/s (median) | runs | CPU s / M events (timed span) "
    "| CPU s / M events (whole process) | peak RSS MiB | timed from the first record ... |"
)


def expected(bootstrap: str, topic: str, ends: dict[int, int]) -> tuple[dict[str, Any], dict[str, str]]:
    """The subset's answer from a plain scan of the topic (no dedupe, like the peers), and the
    Kafka Streams peer's expected output (subset + time to close, ``peerlib.output_lines``)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"peers-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    codec, tally, ttc, left = new_codec(), Tally(), TimeToClose(), sum(ends.values())
    deadline = time.monotonic() + 300
    while left > 0 and time.monotonic() < deadline:
        for m in c.consume(10_000, 1.0):
            if m.error() is not None:
                continue
            left -= 1
            record = codec.decode(m.value() or b"")
            ttc.add(m.key() or b"", record)
            cl = closure_of(record)
            if cl is not None:
                k = (cl.channel_type, minute_of(cl.closed_at))
                tally.per_minute[k] = tally.per_minute.get(k, 0) + 1
                tally.per_account[cl.account] = tally.per_account.get(cl.account, 0) + 1
    c.close()
    if left:
        raise SystemExit(f"scan of {topic} stopped with {left} records unread")
    return {**tally.summary(), "ttc": ttc_summary(ttc.per_channel())}, output_lines(tally, ttc.per_channel())


def ttc_summary(ttc: dict[str, tuple[int, int]]) -> dict[str, int]:
    return {"closures": sum(n for n, _ in ttc.values()), "seconds": sum(s for _, s in ttc.values())}


def read_output(bootstrap: str, topic: str) -> dict[str, str]:
    """The committed output of the Kafka Streams peer: the last value of every key."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"peers-readback-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    rows: dict[str, str] = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            for m in c.consume(10_000, 1.0):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return rows
                    raise SystemExit(f"reading back {topic}: {err}")
                rows[(m.key() or b"").decode()] = (m.value() or b"").decode()
    finally:
        c.close()
    raise SystemExit(f"reading back {topic} did not reach its end in 120 s")


def run_peer(
    name: str,
    bootstrap: str,
    topic: str,
    ends: dict[int, int],
    options: list[str],
    timeout: float,
    lines: dict[str, str],
) -> dict[str, Any]:
    """One process of one implementation, fresh group and state; its result line as a dict."""
    with tempfile.TemporaryDirectory(prefix=f"bench-peers-{name}-") as work:
        group = f"bench-peers-{name}-{uuid.uuid4().hex[:8]}"
        if "ttc=off" in options:
            lines = {k: v for k, v in lines.items() if not k.startswith("t|")}
        Path(work, EXPECTED_FILE).write_text("".join(f"{k}\t{v}\n" for k, v in lines.items()))
        cmd = [
            sys.executable,
            str(HERE / PEERS[name]),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--ends",
            json.dumps(ends),
            "--group",
            group,
            "--workdir",
            work,
            *(f"--option={o}" for o in options),
        ]
        log = Path(work) / "output.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
            try:
                proc.wait(timeout=timeout)
            except BaseException as exc:  # timeout or Ctrl-C: never leave the child running
                proc.kill()
                proc.wait()
                if not isinstance(exc, subprocess.TimeoutExpired):
                    raise
                raise SystemExit(
                    f"{name} did not finish in {timeout:.0f} s; output:\n{log.read_text()[-3000:]}"
                ) from None
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        path = Path(work) / RESULT_FILE
        if not path.exists():
            raise SystemExit(
                f"{name} exited {proc.returncode} without a result; output:\n{log.read_text()[-3000:]}"
            )
        result: dict[str, Any] = json.loads(path.read_text())
        result["process_wall_s"] = wall
        result["process_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        if name == "kstreams":
            got, ttc = parse_output(read_output(bootstrap, f"{group}-output"))
            result.update(got.summary(), ttc=ttc_summary(ttc) if "ttc=off" not in options else None)
            if not result.get("output_matched"):
                raise SystemExit(
                    f"kstreams: its output never equalled the scan; read back {result}; "
                    f"output:\n{log.read_text()[-3000:]}"
                )
        return result


def versions() -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "librdkafka": libversion()[0],
        "java": java_version(),
        "kafka-streams": KAFKA_VERSION,
        "avro (Java)": AVRO_JAVA,
    }
    for p in PACKAGES:
        try:
            found[p] = md.version(p)
        except md.PackageNotFoundError:
            found[p] = "not installed"
    return found


def java_version() -> str:
    try:
        out = subprocess.run([find_java(), "-version"], capture_output=True, text=True, check=False).stderr
    except (OSError, JavaNotFoundError):
        return "not found"
    first = out.splitlines()[0] if out else ""
    return first.split('"')[1] if first.count('"') >= 2 else first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--runs", type=int, default=2, help="rounds; each implementation runs once per round")
    ap.add_argument(
        "--peers",
        default="ours,kstreams,quix,faust",
        help="comma-separated subset of ours,kstreams,quix,faust",
    )
    ap.add_argument("--faust-store", choices=("rocksdb", "memory"), default="rocksdb")
    ap.add_argument("--quix-changelog", choices=("on", "off"), default="on")
    ap.add_argument(
        "--kstreams-ttc",
        choices=("on", "off"),
        default="on",
        help="off: Kafka Streams computes only the two counts (no time-to-close join)",
    )
    ap.add_argument(
        "--metric-set",
        choices=sorted(WHAT_OURS),
        default=DEFAULT_METRIC_SET,
        help=f"ours' metric set (default {DEFAULT_METRIC_SET}); full: every metric and grouping; "
        "a set other than the default writes bench/results/peers-<set>.md",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    args = ap.parse_args()
    LABELS["ours"] = f"convmetrics consumer ({args.metric_set} metric set)"
    names = [n for n in args.peers.split(",") if n]
    if args.kstreams_ttc == "off":
        LABELS["kstreams"] = "Kafka Streams (subset)"
    options = {
        "ours": [f"metric_set={args.metric_set}"],
        "kstreams": [f"ttc={args.kstreams_ttc}"],
        "quix": [f"changelog={args.quix_changelog}"],
        "faust": [f"store={args.faust_store}"],
    }
    command = shlex.join([".venv/bin/python", "bench/peers/run.py", *sys.argv[1:]])
    load_start, date = loadavg(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"load average at start: {load_start}")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    if "kstreams" in names:
        print(f"Kafka Streams peer built in {ensure_built()}")
    with bench_kafka() as (bootstrap, kind):
        # keyed by conversation: the peers' topologies join a conversation's events on the key
        topic, total, produced = ensure_events(
            bootstrap, "bench-peers", gen_config(args.events), args.partitions, key_by="conversation"
        )
        ends = end_offsets(bootstrap, topic) or {}
        print(
            f"broker: {kind}; topic {topic}: {total:,} records in {len(ends)} partitions, "
            + (f"produced in {produced:.1f} s" if produced else "cached")
        )
        want, lines = expected(bootstrap, topic, ends)
        print(f"expected subset (plain scan, no dedupe): {want}")
        for i in range(args.runs):
            for n in names:
                r = run_peer(n, bootstrap, topic, ends, options[n], args.timeout, lines)
                results[n].append(r)
                print(
                    f"run {i + 1} {n:5}: {r['events_per_s']:>9,.0f} events/s  ({r['seconds']:.2f} s timed, "
                    f"{r['process_wall_s']:.1f} s process)  "
                    + json.dumps(
                        {
                            k: v
                            for k, v in r.items()
                            if k not in ("name", "events_per_s", "seconds", "process_wall_s", "digest")
                        }
                    )
                )
    load_end = loadavg()
    eps = {n: median([r["events_per_s"] for r in rs]) for n, rs in results.items()}
    checks = {
        n: all(
            r["digest"] == want["digest"]
            and r["closures"] == want["closures"]
            and (n != "kstreams" or r["ttc"] == (want["ttc"] if args.kstreams_ttc == "on" else None))
            for r in rs
        )
        for n, rs in results.items()
        if n != "ours"
    }
    ours_ttc = all(r["ttc"] == want["ttc"] for r in results.get("ours", []))
    print()
    for n in names:
        print(
            f"{LABELS[n]:40} {eps[n]:>9,.0f} events/s (median of {len(results[n])}), "
            f"{cost(results[n]):.1f} CPU s per million events, peak RSS {peak(results[n]):,.0f} MiB"
            + (f"  aggregates match the scan: {checks[n]}" if n in checks else "")
        )
    if "ours" in results:
        print(f"ours: stored times to close equal the scan's (as Kafka Streams computes them): {ours_ttc}")
    ratios: dict[str, float] = {
        p: eps["ours"] / eps[p] for p in ("kstreams", "quix", "faust") if "ours" in eps and p in eps
    }
    for p, ratio in ratios.items():
        target = targets(args).get(p)
        print(f"ours/{p}: {ratio:.2f}x" + (f"  (target >= {target:g}x)" if target else ""))
    print(f"ours runs {WHAT_OURS[args.metric_set]}; the peers only the subset.")
    print(f"load average at end: {load_end}")
    if not args.no_write:
        write_results(
            args,
            command,
            date,
            kind,
            topic,
            total,
            want,
            results,
            eps,
            ratios,
            checks,
            ours_ttc,
            (load_start, load_end),
        )
        print(f"wrote {results_file(args).relative_to(ROOT)}")


def cost(rs: list[dict[str, Any]]) -> float:
    """Median CPU seconds per million events over the timed span (the process's own CPU, all threads)."""
    return float(median([r["cpu_s"] / r["records"] * 1e6 for r in rs]))


def peak(rs: list[dict[str, Any]]) -> float:
    """Largest peak RSS (MiB) over the runs."""
    return max(float(r["peak_rss_mb"]) for r in rs)


def write_results(
    args: argparse.Namespace,
    command: str,
    date: str,
    kind: str,
    topic: str,
    total: int,
    want: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    eps: dict[str, float],
    ratios: dict[str, float],
    checks: dict[str, bool],
    ours_ttc: bool,
    load: tuple[str, str],
) -> None:
    m, v = machine(), versions()
    rows = []
    for n, rs in results.items():
        runs = ", ".join(f"{r['events_per_s']:,.0f}" for r in rs)
        note = {
            "ours": "to the durable store commit of every end offset",
            "kstreams": "to a read_committed consumer of its output topic seeing the final aggregates",
            "quix": "to the last repartitioned closure counted; final checkpoint "
            + ", ".join(f"{r['final_checkpoint_s']:.2f} s" for r in rs if r.get("final_checkpoint_s")),
            "faust": "to the last forwarded closure counted; offset commits not waited for",
        }[n]
        process_cpu = median([r["process_cpu_s"] / r["records"] * 1e6 for r in rs])
        rows.append(
            f"| {LABELS[n]} | **{eps[n]:,.0f}** | {runs} | {cost(rs):,.1f} | {process_cpu:,.1f} "
            f"| {peak(rs):,.0f} | {note} |"
        )
    match = "; ".join(f"{n}: {'yes' if ok else 'NO'}" for n, ok in checks.items())
    ours = results.get("ours", [{}])[-1]
    verdicts = []
    for p, target in targets(args).items():
        if p in ratios:
            met = "**met**" if ratios[p] >= target else "**not met**"
            verdicts.append(f"ours >= {target:g}x {LABELS[p].split(' (')[0]}: {met}")
    memory = ""
    if "ours" in results and "kstreams" in results:
        less = peak(results["ours"]) < peak(results["kstreams"])
        memory = f"; less memory than Kafka Streams: {'**yes**' if less else '**no**'}"
    threads = ""
    if results.get("kstreams") and results["kstreams"][-1].get("cpu_by_thread_s"):
        split = results["kstreams"][-1]["cpu_by_thread_s"]
        threads = (
            "\nKafka Streams' CPU by thread, last run, from start to the timed end (`/proc/self/task`): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(split.items(), key=lambda kv: -kv[1]))
            + ".\n"
        )
    text = f"""# Peer benchmark: convmetrics consumer vs Kafka Streams, Quix Streams and Faust

Measured {date} by `{command}` (`bench/peers/run.py`; see `bench/peers/README.md`).

- Machine: {m["nproc"]} cores ({m["cpu"]}), {m["ram"]} RAM, shared with other engineers' work;
  load average {load[0]} at start, {load[1]} at end. Broker: {kind}, on the same cores.
- Topic `{topic}`: {total:,} records, {args.partitions} partitions (`--events {args.events}`), every
  implementation reading all of it from offset 0 with a fresh consumer group and fresh state,
  one after the other, {args.runs} rounds.
- Versions: {", ".join(f"{k} {val}" for k, val in v.items())}.

{HEADER}
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{"; ".join(f"**ours/{p}: {r:.2f}x**" for p, r in ratios.items())}.
Targets: {"; ".join(verdicts) or "none for this metric set (they are the default set's)"}{memory}.

CPU s / M events: the process's own CPU time (all its threads; not the broker's) over the
timed span, and over its whole life (start-up, JIT, group join, shutdown included), per
million source records. Peak RSS: the process's VmHWM.
{threads}
Not the same job: ours computes {WHAT_OURS[args.metric_set]}. Kafka Streams computes closures per
channel type per 1-minute event-time window, closures per account (both without dedupe)
and time to close per channel type (count and sum, all time: a windowed join of each
closure with its conversation's created/opened events, the latest start kept per closure
event id, retracted and re-added when a later start arrives), exactly-once v2 into its
output topic, RocksDB state. Quix Streams and Faust compute only the two counts,
at-least-once. Ours, last run: {ours.get("consumed", 0):,} consumed, {ours.get("duplicates", 0):,} duplicates
dropped, {ours.get("closures_folded", 0):,} closures folded, {ours.get("commits", 0)} store commits.

Guarantees: ours drops nothing (a late event updates its windows whenever it comes) and
writes every result and the offsets in one SQL transaction (exactly once into SQL). Kafka
Streams drops a record that arrives after its window's grace period (here {GRACE_DAYS} days, to
cover the stream's lateness of up to 30 days; with a realistic grace it would drop the late
ones) and writes exactly once into Kafka (its output topic and offsets in one transaction).

Peers' aggregates equal a plain scan of the topic ({want["closures"]:,} closures, {want["windows"]:,}
channel-minute windows, {want["accounts"]:,} accounts; time to close for Kafka Streams:
{want["ttc"]["closures"]:,} closures, {want["ttc"]["seconds"]:,} s in all): {match}.
Ours' stored times to close equal the same scan's: {"yes" if ours_ttc else "NO"}.
Settings: Kafka Streams time to close {args.kstreams_ttc}, Quix changelog {args.quix_changelog},
Faust store {args.faust_store}; see the README for
what each implementation was given and what it was not.
"""
    out = results_file(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def targets(args: argparse.Namespace) -> dict[str, float]:
    """The ratios ours must reach: set for the default metric set against the peers' subset."""
    return TARGETS if args.metric_set == DEFAULT_METRIC_SET else {}


def results_file(args: argparse.Namespace) -> Path:
    """bench/results/peers.md for the default metric set, peers-<set>.md for another (as
    bench/consumer.py names its results)."""
    if args.metric_set == DEFAULT_METRIC_SET:
        return RESULTS
    return RESULTS.with_name(f"peers-{args.metric_set}.md")


if __name__ == "__main__":
    main()
