"""The Confluent wire format against single-object encoding, in the same run: the gateway's
batch path and the consumer keep their figures (target: within 5%).

    .venv/bin/python bench/wire.py [--events 300000] [--runs 3] [--seconds 10]

A real schema registry (Apicurio in a JVM, or ``$CONVMETRICS_SCHEMA_REGISTRY_URL``) and the
benchmark broker (``bench/common.py``). Alternating, ``--runs`` times each:
1. gateway: ``wrk`` POSTs batches of 500 webhooks (4 connections) to two gateways, one per
   wire format, each writing its own topic (acks=all); events/s from the 202 answers;
2. consumer: ``MetricsConsumer`` (as ``bench/consumer.py``'s "ours") to committed SQLite
   aggregates over the same generated events, once in each framing (the Confluent topic's
   schema id is looked up in the registry once, then cached).
3. encode only (no HTTP, no Kafka): the gateway's `Intake.prepare` over 100,000 events;
4. decode only (no Kafka): `Codec.decode_many` into the consumer's projection over the
   same 200,000 generated events framed each way, the consumer's decoding step alone.
The order of the two formats alternates from run to run.
Each part is measured as events per wall-clock second and per CPU second of the process
doing the work (the format's cost, which the shared machine's neighbours move far less).
Medians and the confluent/single-object ratios go to the screen and bench/results/wire.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import os
import resource
import shlex
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import bench_kafka, end_offsets, ensure_events, loadavg, machine, median  # noqa: E402

from convmetrics.localregistry import schema_registry_url  # noqa: E402
from schemas import CONVERSATION_EVENT, Codec, subject  # noqa: E402
from schemas.registry import load_pins  # noqa: E402
from schemas.schema_registry import RegistryClient, RegistrySettings  # noqa: E402

RESULTS = ROOT / "bench/results/wire.md"
TARGET = 0.95
BATCH_CONNECTIONS = 4


def load(name: str) -> ModuleType:
    """bench/<name>.py under another module name (`consumer` is also the package's name)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds this process has used so far, all its threads (librdkafka's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_rates(
    confluent: Codec, registry: RegistryClient, runs: int, n: int = 200_000
) -> dict[str, list[float]]:
    """Records/s of the consumer's `decode_many` over the same events in each framing."""
    from consumer.fold.model import READER_SCHEMA
    from convmetrics.generate import GenerateConfig, generate_webhooks
    from producer.intake import Prepared, prepare

    single = Codec(subject(CONVERSATION_EVENT))
    framed: dict[str, list[bytes]] = {"single-object": [], "confluent": []}
    config = GenerateConfig(seed=1, events=int(n * 1.05), accounts=10_000, conversations=n // 4)
    for body in generate_webhooks(config):
        p = prepare(body, single)
        if isinstance(p, Prepared) and len(framed["single-object"]) < n:
            framed["single-object"].append(p.value)
            framed["confluent"].append(confluent.prefix + p.value[10:])
    rates: dict[str, list[float]] = collections.defaultdict(list)
    for i in range(runs):
        for fmt in ("single-object", "confluent") if i % 2 == 0 else ("confluent", "single-object"):
            values = framed[fmt]
            reader = Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA,
                           resolve_id=registry.schema_by_id)  # fmt: skip
            reader.decode_many(values[:10])  # the Confluent id is looked up here, once
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(values), 10_000):  # the consumer's batches
                reader.decode_many(values[i : i + 10_000])
            rates[f"decode {fmt}"].append(len(values) / (time.perf_counter() - started))
            rates[f"decode cpu {fmt}"].append(len(values) / (time.process_time() - cpu))
            print(f"decode, {fmt}: {rates[f'decode {fmt}'][-1]:,.0f} records/s", flush=True)
    return rates


def encode_rates(confluent: Codec, runs: int, n: int = 100_000) -> dict[str, list[float]]:
    """Events/s of the gateway's intake (`Intake.prepare`: validate, map, encode, frame) in each
    framing: the batch path's per-event work, without HTTP and Kafka."""
    from convmetrics.generate import GenerateConfig, generate_webhooks
    from producer.intake import Intake
    from producer.mapping import CONVERSATION_EVENTS

    config = GenerateConfig(seed=2, events=int(n * 1.05), accounts=10_000, conversations=n // 4)
    bodies = [b for b in generate_webhooks(config) if b["event"] in CONVERSATION_EVENTS][:n]
    intakes = {"single-object": Intake(Codec(subject(CONVERSATION_EVENT))), "confluent": Intake(confluent)}
    rates: dict[str, list[float]] = collections.defaultdict(list)
    for i in range(runs):
        for fmt in ("single-object", "confluent") if i % 2 == 0 else ("confluent", "single-object"):
            prepare = intakes[fmt].prepare
            started, cpu = time.perf_counter(), time.process_time()
            for body in bodies:
                prepare(body, received_at_millis=1)
            rates[f"encode {fmt}"].append(len(bodies) / (time.perf_counter() - started))
            rates[f"encode cpu {fmt}"].append(len(bodies) / (time.process_time() - cpu))
            print(f"encode, {fmt}: {rates[f'encode {fmt}'][-1]:,.0f} events/s", flush=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000, help="events per consumer topic")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each format, per part")
    ap.add_argument("--seconds", type=int, default=10, help="length of each gateway run")
    ap.add_argument("--cpu-only", action="store_true",
                    help="only the parts without Kafka (encode, decode); prints, writes nothing")  # fmt: skip
    args = ap.parse_args()
    bench_consumer, bench_gateway = load("consumer"), load("gateway")
    command = shlex.join([".venv/bin/python", "bench/wire.py", *sys.argv[1:]])
    load_start = loadavg()
    r: dict[str, list[float]] = collections.defaultdict(list)
    with schema_registry_url() as registry_url, bench_kafka() as (bootstrap, kind):
        registry = RegistrySettings(registry_url)
        client = RegistryClient(registry)
        events = subject(CONVERSATION_EVENT)
        tag = uuid.uuid4().hex[:8]
        gw_topics = {"single-object": f"bench-wire-so-{tag}", "confluent": f"bench-wire-cf-{tag}"}
        client.push(events, gw_topics["confluent"], load_pins())
        bench_topic = "bench-wire-consumer"  # its registry subject: the consumer asks by id only
        client.push(events, bench_topic, load_pins())
        confluent = Codec(events, schema_id=client.schema_id(bench_topic, events.latest))
        r.update(decode_rates(confluent, client, args.runs))
        r.update(encode_rates(confluent, args.runs))
        if args.cpu_only:
            for key, xs in sorted(r.items()):
                print(f"{key}: median {median(xs):,.0f} ({', '.join(f'{x:,.0f}' for x in xs)})")
            for part in ("encode", "decode", "encode cpu", "decode cpu"):
                so, cf = r[f"{part} single-object"], r[f"{part} confluent"]
                print(f"{part}: confluent / single-object {median(cf) / median(so):.3f}")
            return
        cfg = bench_consumer.gen_config(args.events, args.events // 4)
        topics = {}
        for fmt, codec in (("single-object", None), ("confluent", confluent)):
            topic, total, produced = ensure_events(bootstrap, "bench-wire", cfg, 6, args.events, codec=codec)
            print(f"{fmt}: {topic}, {total:,} records ({'cached' if not produced else f'{produced:.0f} s'})")
            topics[fmt] = (topic, total, end_offsets(bootstrap, topic) or {})
        wrk = bench_gateway.ensure_wrk()
        body = bench_gateway.batch_body().decode()
        batch_lua = ("wrk.method='POST'\nwrk.headers['Content-Type']='application/x-ndjson'\n"
                     f"wrk.body=[==[{body}]==]\nwrk.path='/webhooks/batch'\n")  # fmt: skip
        for i in range(args.runs):
            for fmt in ("single-object", "confluent") if i % 2 == 0 else ("confluent", "single-object"):
                port = bench_gateway.free_port()
                env = {**os.environ, "CONVMETRICS_BOOTSTRAP_SERVERS": bootstrap,
                       "CONVMETRICS_TOPIC": gw_topics[fmt], "CONVMETRICS_WIRE_FORMAT": fmt,
                       "CONVMETRICS_SCHEMA_REGISTRY_URL": registry_url}  # fmt: skip
                cmd = [sys.executable, "-m", "convmetrics", "--log-level", "WARNING", "gateway", "--host",
                       "127.0.0.1", "--port", str(port), "--max-batch-bytes", str(16 << 20)]  # fmt: skip
                with bench_gateway.server(cmd, port, env) as proc:
                    url = f"http://127.0.0.1:{port}/webhooks/batch"
                    bench_gateway.run_wrk(wrk, url, batch_lua, 2, connections=BATCH_CONNECTIONS)  # warm-up
                    cpu = process_cpu(proc.pid)
                    got = bench_gateway.run_wrk(wrk, url, batch_lua, args.seconds,
                                                connections=BATCH_CONNECTIONS)  # fmt: skip
                    cpu = process_cpu(proc.pid) - cpu
                eps = got["rps"] * bench_gateway.BATCH_SIZE
                r[f"gateway {fmt}"].append(eps)
                r[f"gateway cpu {fmt}"].append(eps * args.seconds / cpu)
                print(f"run {i + 1}: gateway batch, {fmt}: {eps:,.0f} events/s", flush=True)
            for fmt in ("single-object", "confluent") if i % 2 == 0 else ("confluent", "single-object"):
                topic, total, ends = topics[fmt]
                cpu = own_cpu()
                seconds, info = bench_consumer.ours(bootstrap, topic, ends, registry=registry)
                r[f"consumer {fmt}"].append(total / seconds)
                r[f"consumer cpu {fmt}"].append(total / (own_cpu() - cpu))
                print(f"run {i + 1}: consumer, {fmt}: {total / seconds:,.0f} events/s ({info.split(';')[0]})",
                      flush=True)  # fmt: skip
    report(r, command, kind, load_start, loadavg(), args)


def report(r: dict[str, list[float]], command: str, kind: str, start: Any, end: Any, args: Any) -> None:
    rows = []
    for part in ("encode", "decode", "gateway", "consumer"):
        for measure, label in (("", part), (" cpu", f"{part}, per CPU second")):
            so, cf = r[f"{part}{measure} single-object"], r[f"{part}{measure} confluent"]
            ratio = median(cf) / median(so)
            runs = ", ".join(f"{c / s:.3f}" for c, s in zip(cf, so, strict=True))
            rows.append(
                f"| {label} | {median(so):,.0f} ({', '.join(f'{x:,.0f}' for x in so)}) | "
                f"{median(cf):,.0f} ({', '.join(f'{x:,.0f}' for x in cf)}) | {ratio:.3f} ({runs}) | "
                f"{'yes' if ratio >= TARGET else '**no**'} |"
            )
    m = machine()
    md = [
        f"Measured by `bench/wire.py` on {datetime.date.today().isoformat()}: `{command}` (broker: "
        f"{kind.split(',')[0]}; registry: Apicurio Registry, or the configured one). Gateway: POST "
        f"/webhooks/batch, 500 events a request, {BATCH_CONNECTIONS} connections, {args.seconds} s a run, "
        f"events/s from 202 answers. Consumer: MetricsConsumer to committed SQLite aggregates over "
        f"{args.events:,} generated events, 6 partitions. Encode: the gateway's `Intake.prepare` "
        "alone, 100,000 events. Decode: `decode_many` alone, 200,000 events in "
        f"batches of 10,000, no Kafka. Formats alternate, {args.runs} runs each.",
        "",
        "Each part twice: events per second of wall-clock time (what a user sees, and what the "
        "shared machine's neighbours move most), and events per CPU second of the process doing "
        "the work (the gateway's, or this one's for encode, decode and the consumer, all threads: "
        "what the format costs; time the machine gave to others is not in it).",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, shared; load average {start} at start, "
        f"{end} at end.",
        "",
        "| part | single-object events/s, median (runs) | confluent events/s, median (runs) | "
        "ratio confluent / single-object (per run) | within 5% |",
        "|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(md))
    RESULTS.write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
