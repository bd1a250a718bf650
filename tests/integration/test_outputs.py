"""Prometheus and the terminal against a real pipeline: the consumer's health metrics on the
real broker, `convmetrics serve`'s closure metrics and `convmetrics metrics` equal to the API."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio._backends._asyncio import WorkerThread  # its idle timeout: WORKER_IDLE_SECONDS
from prometheus_client.parser import text_string_to_metric_families

from consumer.heap import GEN0_THRESHOLD
from consumer.serve.server import serve_in_thread
from consumer.stream.exporter import ConsumerMetrics
from consumer.stream.runner import MetricsConsumer
from consumer.stream.settings import ConsumerSettings
from convmetrics.generate import GenerateConfig, generate_webhooks
from schemas import conversation_codec
from support.gateway import free_port
from support.pipeline import (
    ConsumerProcess,
    fetch_metrics,
    fetch_rows,
    produce_raw,
    produce_webhooks,
    wait_caught_up,
)
from support.truth import dedupe

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(ls)[label]: v for (n, ls), v in samples.items() if n == name}


def produce_and_encode_one(webhooks: list[dict[str, Any]]) -> bytes:
    """The encoded bytes of the first webhook, as the gateway would produce them."""
    from producer.intake import Prepared, prepare

    item = prepare(webhooks[0], conversation_codec())
    assert isinstance(item, Prepared)
    return item.value


def stream(seed: int, events: int) -> list[dict[str, Any]]:
    cfg = GenerateConfig(
        seed=seed,
        events=events,
        accounts=30,
        conversations=events // 6,
        duplicate_rate=0.08,
        late_rate=0.05,
        unknown_channel_rate=0.05,
        noise_rate=0.0,
    )
    return [dict(w) for w in generate_webhooks(cfg)]


@pytest.fixture
def served_store(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path) -> Iterator[Path]:
    """A store filled by a real `convmetrics consume` run."""
    topic = new_topic(2, prefix="outputs")
    store = tmp_path / "metrics.db"
    produce_webhooks(kafka_bootstrap, topic, stream(5, 4000))
    proc = ConsumerProcess(kafka_bootstrap, topic, store, tmp_path / "consumer.log")
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
    finally:
        proc.stop()
    yield store


@pytest.fixture
def serve(served_store: Path, tmp_path: Path) -> Iterator[str]:
    """`convmetrics serve --metric-set full` as a real process on the store (filled with the
    full set); yields its base URL."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "convmetrics", "serve", "--store", f"sqlite:///{served_store}",
         "--port", str(port), "--metric-set", "full"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve never answered"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_serve_exposes_the_metric_sets_metrics_per_channel_type(serve: str) -> None:
    """Every counter and distribution of the running set (the full one: created,
    assignments, snoozes, closed_window_expired too) that counts by channel type, equal to
    `/v1/metrics`' all-time rows, labelled by channel type only."""
    from consumer.fold.registry import REGISTRY, Kind

    samples = scrape(f"{serve}/metrics")
    rows = {r["key"]["channel_type"]: r for r in fetch_metrics(serve, "channel_type", "all")}
    assert set(rows) == {r["key"] for r in fetch_rows(serve, "channel_type", "all")}
    shown = [m for m in REGISTRY.metrics if m.counts_in("channel_type", "all")]
    counters = [m for m in shown if m.kind is Kind.COUNTER]
    distributions = [m for m in shown if m.kind is Kind.DISTRIBUTION]
    assert {"created", "assignments", "snoozes", "closed_window_expired"} <= {m.name for m in counters}
    for m in counters:
        want = {k: r[m.name] for k, r in rows.items()}
        assert labelled(samples, f"convmetrics_{m.name}_total", "channel_type") == want, m.name
    for name in ("created", "assignments", "snoozes", "closed_window_expired"):  # the stream has them
        assert sum(labelled(samples, f"convmetrics_{name}_total", "channel_type").values()) > 0, name
    for m in distributions:
        family = f"convmetrics_{m.name}_seconds"
        for k, r in rows.items():
            d, ct = r[m.name], ("channel_type", k)
            assert samples[(f"{family}_count", (ct,))] == d["count"], (m.name, k)
            if m.exact_min:
                assert samples[(f"{family}_sum", (ct,))] == d["sum"], (m.name, k)
            elif d["count"]:
                assert samples[(f"{family}_sum", (ct,))] == pytest.approx(d["mean"] * d["count"])
            for q, stat in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
                assert samples.get((family, (ct, ("quantile", q)))) == d[stat], (m.name, k, q)
            for bucket, n in d.get("buckets", {}).items():  # SLA buckets, where the set has them
                assert samples[(f"convmetrics_{m.name}_buckets_total", (("bucket", bucket), ct))] == n
    newest = httpx.get(f"{serve}/v1/summary").json()["newest"]
    assert labelled(samples, "convmetrics_newest_window_start_seconds", "window") == newest
    n_accounts = len(fetch_rows(serve, "account", "all"))
    # per channel type, not account: a sample per counter, up to 5 per summary (3 quantiles,
    # count, sum), 3 newest-window gauges and the folded-names gauge (0: under 200 names)
    assert samples[("convmetrics_channel_types_folded", ())] == 0
    first = next(iter(rows.values()))
    buckets = sum(len(first[m.name].get("buckets", {})) for m in distributions)
    # and the live gauges, a sample each per channel type: /v1/backlog's (0 where it has none)
    backlog = {
        r["key"]["channel_type"]: r
        for r in httpx.get(f"{serve}/v1/backlog", params={"group": "channel_type"}).json()["rows"]
    }
    for g in REGISTRY.gauges:
        want = {k: backlog[k][g.name] if k in backlog else 0 for k in rows}
        assert labelled(samples, f"convmetrics_{g.name}_conversations", "channel_type") == want, g.name
    assert sum(r["open"] for r in backlog.values()) > 0
    per_channel = len(counters) + 5 * len(distributions) + buckets + len(REGISTRY.gauges)
    # (labelled by account instead, they would be per_channel per account)
    assert len(samples) <= per_channel * len(rows) + 4 < per_channel * n_accounts
    assert all(
        label in ("channel_type", "quantile", "bucket", "window") for _, ls in samples for label, _ in ls
    )


def run_metrics(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convmetrics", "metrics", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "140"},
    )


#: how long anyio keeps an idle worker thread: the API's blocking handlers run on those
#: threads, so a pause longer than this ends them. Read from anyio (a private attribute:
#: if it moves, this fails loudly rather than pausing too briefly to end any thread)
WORKER_IDLE_SECONDS: float = WorkerThread.MAX_IDLE_TIME


def test_serve_outlives_its_request_threads(serve: str) -> None:
    """Bursts of parallel requests with pauses between them longer than a worker thread
    stays idle: each burst runs on new threads, which open their own store connections.
    With the compiled part's allocator at mimalloc 3.3, the first allocation of such a
    thread (in SQLite's bins_one, compiled) crashed the process at the second burst."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"{serve}/v1/metrics?group=inbox&window=1h&limit=5"
    with ThreadPoolExecutor(6) as pool:
        for burst in range(3):
            time.sleep(WORKER_IDLE_SECONDS + 3)  # the threads before (the fixture's too) end
            codes = list(pool.map(lambda _: httpx.get(url, timeout=10).status_code, range(6)))
            assert codes == [200] * 6, (burst, codes)


def test_metrics_command_equals_the_api_from_both_sources(serve: str, served_store: Path) -> None:
    for by, window in (("channel-type", "1h"), ("account", "1d"), ("channel-type", "all")):
        api_rows = fetch_rows(serve, by.replace("-", "_"), window)
        for source in (["--api", serve], ["--store", f"sqlite:///{served_store}"]):
            done = run_metrics("--by", by, "--window", window, "--json", "--limit", "100000", *source)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["rows"] == api_rows, (by, window, source)

    newest_hour = httpx.get(f"{serve}/v1/summary").json()["newest"]["1h"]
    done = run_metrics("--api", serve, "--last", "6h", "--json")
    rows = json.loads(done.stdout)["rows"]
    assert {r["window_start"] for r in rows} <= set(range(newest_hour - 5 * 3600, newest_hour + 1, 3600))
    assert rows == [
        r for r in fetch_rows(serve, "channel_type", "1h") if r["window_start"] >= newest_hour - 5 * 3600
    ]

    table = run_metrics("--store", f"sqlite:///{served_store}", "--window", "all")
    assert table.returncode == 0, table.stderr
    busiest = max(fetch_rows(serve, "channel_type", "all"), key=lambda r: r["closures"])
    line = next(ln for ln in table.stdout.splitlines() if f" {busiest['key']} " in ln)
    assert f"{busiest['closures']:,}" in line

    bad = run_metrics("--api", serve, "--by", "account", "--key", "acme")
    assert bad.returncode == 2 and "account id" in bad.stderr


def test_consumer_process_health_metrics(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The consumer with ConsumerMetrics as its commit hook and /metrics served from its
    registry (what `consume --http-port` wires up), on the real broker."""
    topic = new_topic(3, prefix="health")
    webhooks = stream(9, 3000)
    good = produce_and_encode_one(webhooks)
    poison = [(b"k1", b"not avro at all"), (b"k2", good[:20]), (None, b"")]  # garbage, truncated, empty
    produced = produce_webhooks(kafka_bootstrap, topic, webhooks)
    produce_raw(kafka_bootstrap, topic, poison)
    unique = dedupe(webhooks)
    by_type = Counter(w["event"] for w in unique)

    store = tmp_path / "metrics.db"
    settings = ConsumerSettings(
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group=f"health-{topic}",
        store_url=f"sqlite:///{store}",
        flush_interval=0.3,
    )
    metrics = ConsumerMetrics()
    consumer = MetricsConsumer(settings, on_commit=metrics.on_commit)
    metrics.watch(lambda: consumer.stats)
    port = free_port()
    server, _ = serve_in_thread(settings.store_url, "127.0.0.1", port, registry=metrics.registry)
    runner = threading.Thread(target=consumer.run, name="consumer", daemon=True)
    gc_threshold, switch = gc.get_threshold(), sys.getswitchinterval()
    runner.start()
    try:
        wait_caught_up(kafka_bootstrap, topic, store, [])
        assert gc.get_threshold()[0] == GEN0_THRESHOLD  # the process-wide tuning, while it runs
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30  # lag is refreshed every 5 s
        while True:
            samples = scrape(url)
            lag = labelled(samples, "convmetrics_consumer_lag_records", "partition")
            if set(lag) == {"0", "1", "2"} and not any(lag.values()):
                break
            assert time.monotonic() < deadline, f"lag never reached 0 on every partition: {lag}"
            time.sleep(0.5)
        assert samples[("convmetrics_consumer_records_total", ())] == produced + len(poison)
        assert labelled(samples, "convmetrics_consumer_events_total", "type") == dict(by_type)
        assert samples[("convmetrics_consumer_duplicates_total", ())] == produced - len(unique) > 0
        assert samples[("convmetrics_consumer_dead_lettered_total", ())] == len(poison)
        assert samples[("convmetrics_consumer_fenced_partitions_total", ())] == 0
        commits = samples[("convmetrics_consumer_commits_total", ())]
        assert commits >= 1
        assert samples[("convmetrics_consumer_flush_seconds_count", ())] == commits
        assert samples[("convmetrics_consumer_store_transaction_seconds_count", ())] == commits
        assert samples[("convmetrics_consumer_flush_seconds_sum", ())] > 0
        # the same /metrics also carries the closure metrics of the store it fills
        closures = labelled(samples, "convmetrics_closures_total", "channel_type")
        assert sum(closures.values()) == by_type["conversation.closed"]
    finally:
        consumer.stop()
        runner.join(60)
        server.should_exit = True
    # ... given back when it stops (the consumer may run inside a bigger program)
    assert (gc.get_threshold(), sys.getswitchinterval()) == (gc_threshold, switch)
