"""`convmetrics demo`: the whole pipeline on one machine, with live numbers.

Starts (or reuses) a Kafka broker, the gateway, the consumer with its API, streams
generated webhooks through HTTP, then prints the closure metrics. The events are timed
around the present: the stream backfills the last two days up to now, then (unless
`--once`) the demo keeps posting a live trickle of events timed as they are sent, with a
live table, until Ctrl-C, so that the dashboard URL it prints stays alive. Every process
it starts is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from convmetrics.generate import GenerateConfig, generate_webhooks
from convmetrics.localkafka.broker import pick_free_ports
from convmetrics.process import ending_with_parent, signals_stop
from producer.exceptions import KeyMismatchError, TopicError
from producer.settings import GatewaySettings
from producer.topics import check_key
from schemas.kafka import client_config

console = Console(stderr=True)


class DemoError(Exception):
    """The demo could not start or finish; the message says which part and why."""


#: the backfill's events start this long before the demo starts (the dashboard draws 48 hours)
BACKFILL_SECONDS = 2 * 86_400
#: the live trickle's generator spans this much event time (a day of the demo running)
LIVE_SECONDS = 86_400
#: conversation ids of the live trickle start above this (the backfill's are 1..conversations)
LIVE_ID_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class DemoOptions:
    events: int = 20_000
    rate: float | None = None  # webhooks per second; None: as fast as the gateway takes them
    #: print the table and exit after the backfill (False: keep running with a live view)
    once: bool = False
    #: webhooks per second of event time in the live trickle (after the backfill)
    live_rate: float = 5.0
    batch: int = 200
    seed: int = 1
    topic: str = "conversation-events"
    gateway_port: int | None = None
    api_port: int | None = None
    data_dir: Path | None = None
    #: an external cluster (None: a local broker; never $CONVMETRICS_BOOTSTRAP_SERVERS, which
    #: an operator's shell may point at production)
    bootstrap_servers: str | None = None
    #: its client settings (`schemas.kafka`), and the flags that gave them, for the children
    kafka: Mapping[str, str] = field(default_factory=dict)
    kafka_flags: tuple[str, ...] = ()


class Child:
    """A convmetrics subcommand as a child process, its output in a log file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.log = name, log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ending_with_parent([sys.executable, "-m", "convmetrics", *args]),  # even if we are SIGKILLed
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise DemoError(
                f"{self.name} exited with {self.proc.returncode}; last lines of {self.log}:\n{tail}"
            )

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM); `stop` waits for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        """Stop it: SIGTERM, then SIGKILL after `timeout` seconds."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()


def wait_http(url: str, child: Child, timeout: float = 60) -> None:
    """Wait until ``url`` answers 200; the error names the last reason the child gave for not
    being ready (the gateway's 503 ``detail``)."""
    deadline, why = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        child.check()
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                return
            body = answer.json()
            detail = body.get("detail") if isinstance(body, dict) else None
            why = f": {detail}" if isinstance(detail, str) else why
        time.sleep(0.2)
    raise DemoError(f"{child.name} did not answer {url} within {timeout:.0f}s{why} (log: {child.log})")


def _check_key(bootstrap: str, opts: DemoOptions, data: Path) -> None:
    """Refuse at once, saying what to do, a topic whose events are keyed otherwise than the
    demo's gateway keys them (a --data-dir kept from a release that keyed them by
    conversation): the gateway would stay not ready on it (`producer.topics.check_key`)."""
    try:  # the gateway child's settings: it reads the same environment
        key_by = GatewaySettings(bootstrap_servers=bootstrap).key_by
    except ValidationError:
        return  # the gateway says what is wrong with them
    topics_log = logging.getLogger("producer.topics")
    level = topics_log.level
    topics_log.setLevel(logging.CRITICAL)  # librdkafka's lines: the outcome is said below
    try:
        check_key(bootstrap, opts.topic, key_by, kafka=opts.kafka)
    except KeyMismatchError as exc:
        instead = (
            "" if opts.bootstrap_servers else f"a new --data-dir (or none: {data} holds its broker's data), "
        )
        raise DemoError(
            f"topic {opts.topic} holds events keyed by {exc.found} and the demo's gateway keys them "
            f"by {key_by}: run the demo with {instead}another --topic, or with "
            f"CONVMETRICS_KEY_BY={exc.found}"
        ) from None
    except TopicError as exc:
        raise DemoError(str(exc)) from None
    finally:
        topics_log.setLevel(level)


@contextlib.contextmanager
def kafka(data_dir: Path, given: str | None = None) -> Iterator[str]:
    """The demo's Kafka: the cluster `given` (its --bootstrap-servers), else a local broker.
    CONVMETRICS_BOOTSTRAP_SERVERS is not read: set in an operator's shell for the real
    services, it would have the demo write generated events to their topics."""
    if given:
        console.print(f"Kafka: {given} (the demo writes its generated events to that cluster)")
        yield given
        return
    from convmetrics.localkafka import LocalBroker

    ignored = " (CONVMETRICS_BOOTSTRAP_SERVERS is not used: --bootstrap-servers runs it on a cluster)"
    console.print(
        "Kafka: starting a local broker (the first run downloads the Apache Kafka jars)"
        + (ignored if os.environ.get("CONVMETRICS_BOOTSTRAP_SERVERS") else "")
    )
    with LocalBroker(data_dir=data_dir / "kafka", on_download=lambda m: console.print(m)) as broker:
        broker.start()
        console.print(f"Kafka: {broker.bootstrap_servers}")
        yield broker.bootstrap_servers


def backfill_config(opts: DemoOptions, now: int) -> GenerateConfig:
    """The backfill: conversations over the two days before `now` (steps after it are cut,
    so some are still open at the end)."""
    start = now - BACKFILL_SECONDS
    return GenerateConfig(
        seed=opts.seed,
        events=opts.events,
        accounts=50,
        conversations=max(opts.events // 5, 10),
        start=start,
        span=BACKFILL_SECONDS,
    )


def live_config(opts: DemoOptions, now: int) -> GenerateConfig:
    """The live trickle: conversations from `now` on, as many as make `live_rate` webhooks
    per second of event time."""
    events = max(int(opts.live_rate * LIVE_SECONDS), 10)
    return GenerateConfig(
        seed=opts.seed + 1,
        events=events,
        accounts=50,
        conversations=max(events // 5, 10),
        start=now,
        span=LIVE_SECONDS,
    )


def stream(gateway: str, opts: DemoOptions, now: int) -> tuple[int, int, int]:
    """POST generated webhooks in batches with a live progress bar: (accepted, ignored, rejected)."""
    cfg = backfill_config(opts, now)
    accepted = ignored = rejected = 0
    started = time.monotonic()
    counts = (
        "{task.fields[rate]:>6.0f}/s accepted {task.fields[ok]} ignored {task.fields[ign]} "
        "rejected {task.fields[bad]}"
    )
    columns = (TextColumn("[bold]webhooks"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn(counts), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar, httpx.Client(base_url=gateway, timeout=60) as client:
        task = bar.add_task("post", total=opts.events, rate=0.0, ok=0, ign=0, bad=0)
        sent = 0
        chunk: list[bytes] = []
        for webhook in generate_webhooks(cfg):
            chunk.append(orjson.dumps(webhook))
            if len(chunk) < opts.batch:
                continue
            a, i, r = post_batch(client, chunk)
            accepted, ignored, rejected, sent = accepted + a, ignored + i, rejected + r, sent + len(chunk)
            chunk = []
            elapsed = time.monotonic() - started
            if opts.rate and sent / opts.rate > elapsed:
                time.sleep(sent / opts.rate - elapsed)
            rate = sent / max(time.monotonic() - started, 1e-9)
            done = min(sent, opts.events)
            bar.update(task, completed=done, rate=rate, ok=accepted, ign=ignored, bad=rejected)
        if chunk:
            a, i, r = post_batch(client, chunk)
            accepted, ignored, rejected, sent = accepted + a, ignored + i, rejected + r, sent + len(chunk)
        bar.update(task, total=sent, completed=sent, ok=accepted, ign=ignored, bad=rejected)
    return accepted, ignored, rejected


def post_batch(client: httpx.Client, lines: list[bytes]) -> tuple[int, int, int]:
    """One NDJSON batch; a 503 (Kafka not acknowledging) is retried, as a webhook sender would."""
    body = b"\n".join(lines)
    for _ in range(30):
        r = client.post("/webhooks/batch", content=body, headers={"content-type": "application/x-ndjson"})
        if r.status_code != 503:
            data: dict[str, Any] = r.json()
            return int(data["accepted"]), int(data["ignored"]), int(data["rejected"])
        time.sleep(float(r.headers.get("retry-after", "1")))
    raise DemoError("the gateway kept answering 503: Kafka is not acknowledging writes")


def wait_consumed(
    bootstrap: str,
    topic: str,
    store: Path,
    consumer: Child,
    timeout: float = 300,
    kafka: Mapping[str, str] | None = None,
) -> None:
    """Until the store's committed offsets reach the end of every partition."""
    probe = Consumer(client_config(bootstrap, kafka, group_id="convmetrics-demo-probe"))
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        probe.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer.check()
        if store.exists():
            with (
                contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db,
                contextlib.suppress(sqlite3.OperationalError),
            ):
                done = dict(db.execute("SELECT partition, next_offset FROM offsets").fetchall())
                if all(done.get(p, 0) >= end for p, end in ends.items()):
                    return
        time.sleep(0.2)
    raise DemoError(f"the consumer did not catch up within {timeout:.0f}s (log: {consumer.log})")


def channel_table(api: str, out: Console, title: str = "Closure metrics by channel type, all time") -> Any:
    """The channel types' all-time closure metrics, busiest first, laid out for `out`'s width
    (consumer.serve.report.render: every cell whole at any width)."""
    from consumer.serve.report import Grid, fitted, human_duration

    rows = httpx.get(f"{api}/v1/closures", params={"by": "channel_type", "window": "all"}, timeout=30).json()[
        "rows"
    ]
    grid = Grid(title)
    grid.column("channel type", right=False)
    for col in ("closures", "reopens", "unread at close", "ttc p50", "ttc p90", "ttc p99"):
        grid.column(col)
    for r in sorted(rows, key=lambda r: -r["closures"]):
        t = r["time_to_close"]
        share = f"{100 * r['closed_unread'] / r['closures']:.0f}%" if r["closures"] else "-"
        grid.rows.append([r["key"], str(r["closures"]), str(r["reopens"]), share,
                          *(human_duration(t[q]) for q in ("p50", "p90", "p99"))])  # fmt: skip
    return fitted(out, grid)


def print_table(api: str) -> None:
    out = Console()
    out.print(channel_table(api, out))


def live_items(opts: DemoOptions, now: int) -> Iterator[dict[str, Any]]:
    """The live trickle's webhooks, their conversations numbered apart from the backfill's."""
    for w in generate_webhooks(live_config(opts, now)):
        if str(w.get("event", "")).startswith("conversation.") and isinstance(w.get("data"), dict):
            w = {**w, "data": {**w["data"], "id": w["data"]["id"] + LIVE_ID_OFFSET}}
        yield w


def due(webhook: Mapping[str, Any]) -> int:
    """When the live trickle posts a webhook: its first delivery time (a late or repeated
    delivery's is in the past: it goes at once)."""
    t = webhook.get("firstDeliveryAttempt")
    return t if isinstance(t, int) else 0


def run_live(gateway: str, api: str, opts: DemoOptions, now: int, children: list[Child]) -> None:
    """Post the live trickle as its events come due, and redraw the table every 2 s, until
    Ctrl-C (or a child dies: DemoError)."""
    from rich.console import Group
    from rich.live import Live

    items = live_items(opts, now)
    pending = next(items, None)
    sent = accepted = 0
    redrawn = 0.0
    with (
        httpx.Client(base_url=gateway, timeout=60) as client,
        Live(console=console, auto_refresh=False) as view,
    ):
        while True:
            for child in children:
                child.check()
            chunk: list[bytes] = []
            while pending is not None and due(pending) <= time.time() and len(chunk) < opts.batch:
                chunk.append(orjson.dumps(pending))
                pending = next(items, None)
            if chunk:
                a, _, _ = post_batch(client, chunk)
                sent, accepted = sent + len(chunk), accepted + a
            if time.monotonic() - redrawn >= 2:
                redrawn = time.monotonic()
                stamp = time.strftime("%H:%M:%S", time.gmtime())
                line = (f"live: {sent} webhooks posted since the backfill ({accepted} accepted), "
                        f"timed as sent; {stamp} UTC; dashboard {api}/; Ctrl-C stops everything")  # fmt: skip
                with contextlib.suppress(httpx.HTTPError):
                    view.update(
                        Group(
                            channel_table(api, console, "Closure metrics by channel type, all time (live)"),
                            line,
                        )
                    )
                view.refresh()
            time.sleep(0.5)


def run_demo(opts: DemoOptions) -> int:
    """The demo; Ctrl-C, SIGTERM and SIGHUP stop it and its children in order (and a SIGKILL
    ends the children too: `convmetrics.process`)."""
    with signals_stop():
        return _run_demo(opts)


def _run_demo(opts: DemoOptions) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tmp = None
    if opts.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="convmetrics-demo-")
        data = Path(tmp.name)
    else:
        data = opts.data_dir
        data.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        with kafka(data, opts.bootstrap_servers) as bootstrap:
            try:
                # picked at once, so the two never repeat each other (nor a port given)
                picked = [p for p in pick_free_ports(3) if p not in (opts.gateway_port, opts.api_port)]
                gw_port, api_port = opts.gateway_port or picked[0], opts.api_port or picked[1]
                _check_key(bootstrap, opts, data)
                gw_args = ["gateway", "--bootstrap-servers", bootstrap, "--topic", opts.topic,
                           "--host", "127.0.0.1", "--port", str(gw_port), *opts.kafka_flags]  # fmt: skip
                gateway = Child("gateway", gw_args, data / "gateway.log")
                children.append(gateway)
                wait_http(f"http://127.0.0.1:{gw_port}/readyz", gateway)
                store = data / "metrics.db"
                # a group of its own: on a shared cluster, never a deployment's (closure-metrics)
                consume = ["consume", "--bootstrap-servers", bootstrap, "--topic", opts.topic,
                           "--group", f"convmetrics-demo-{opts.topic}",
                           "--store", f"sqlite:///{store}", "--http-port", str(api_port),
                           "--metrics-topic", "--metric-rows-topic", "--metric-set", "full",
                           *opts.kafka_flags]  # fmt: skip
                consumer = Child("consumer", consume, data / "consumer.log")
                children.append(consumer)
                api = f"http://127.0.0.1:{api_port}"
                wait_http(f"{api}/healthz", consumer)
                console.print(f"gateway: http://127.0.0.1:{gw_port}/webhooks   API: {api}/v1/closures   "
                              f"dashboard: {api}/   logs: {data}")  # fmt: skip
                now = int(time.time())
                accepted, ignored, rejected = stream(f"http://127.0.0.1:{gw_port}", opts, now)
                console.print(f"sent: {accepted} accepted (durable in Kafka), {ignored} ignored "
                              f"(not conversation events), {rejected} rejected")  # fmt: skip
                wait_consumed(bootstrap, opts.topic, store, consumer, kafka=opts.kafka)
                if opts.once:
                    print_table(api)
                console.print(
                    f"API: {api}/v1/closures?by=account&window=1h   dashboard: {api}/   "
                    f"Prometheus: {api}/metrics   metrics topics: conversation-metric-rows, "
                    "conversation-closure-metrics"
                )
                if not opts.once:
                    console.print("running; Ctrl-C stops everything")
                    run_live(f"http://127.0.0.1:{gw_port}", api, opts, now, children)
            finally:  # the children before the broker: they flush and leave the group through it;
                for child in children:  # both at once, so a slow one does not hold the other
                    child.terminate()
                for child in reversed(children):
                    child.stop()
        return 0
    except KeyboardInterrupt as why:
        console.print(f"\nstopping ({str(why) or 'SIGINT'})")  # Ctrl-C's KeyboardInterrupt has no text
        return 130
    finally:
        if tmp is not None:
            tmp.cleanup()
