"""Helpers shared by the benchmarks: a broker that keeps its data between runs, topics of
pre-produced synthetic events cached on it, and facts about the machine.

``bench_kafka()`` uses ``CONVMETRICS_BOOTSTRAP_SERVERS`` when set; otherwise it starts a
``LocalBroker`` whose data lives in ``<cache>/bench-kafka`` (``~/.cache/convmetrics``), so
topics produced by one run are still there for the next (a temp dir when that one is busy).
``ensure_events()`` names a topic after everything that shapes its records and writes a
manifest record (in ``bench-manifest``) once every record is acknowledged: a topic is
reused only when its manifest matches its end offsets, else it is dropped and produced again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from convmetrics.generate import GenerateConfig, generate_webhooks
from convmetrics.localkafka import LocalBroker
from convmetrics.localkafka.jars import cache_dir
from producer.mapping import KeyBy

MANIFEST_TOPIC = "bench-manifest"
BOOTSTRAP_ENV = "CONVMETRICS_BOOTSTRAP_SERVERS"


def _kafka_holds(data_dir: Path) -> bool:
    """Whether a running Kafka holds ``data_dir`` (its ``.lock``, an fcntl lock taken by the JVM)."""
    lock = data_dir / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(f, fcntl.LOCK_UN)
    return False


#: Nothing expires on the bench broker. The generated events carry 2023 event times, and
#: the peers' repartition topics (Quix Streams, Faust) keep the source timestamps: under the
#: default 7-day retention the broker deleted their segments mid-run ("offset out of
#: range"), and Quix Streams then waited forever for the closures it had lost.
KEEP = {"log.retention.ms": "-1"}


@contextlib.contextmanager
def bench_kafka() -> Iterator[tuple[str, str]]:
    """Yield (bootstrap servers, kind): the configured cluster or a local broker, stopped on exit.

    Only one run at a time may use the cached data dir: a second Kafka started on it crashes
    the first (its controller touches the metadata log before it fails on the dir's lock).
    The run holds ``bench-kafka.lock`` while it uses the dir; others get a temp dir.
    """
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external, "external"
        return
    data_dir = cache_dir() / "bench-kafka"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "bench-kafka.lock", "a") as guard:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = _kafka_holds(data_dir)
        except OSError:
            busy = True
        if busy:
            print(f"{data_dir} is in use by another run: this run's topics go to a temp dir")
            broker, kind = LocalBroker(extra_properties=KEEP).start(), "local, temp data"
        else:
            broker = LocalBroker(data_dir=data_dir, extra_properties=KEEP).start()
            kind = f"local, data kept in {data_dir}"
        try:
            yield broker.bootstrap_servers, kind
        finally:
            broker.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int] | None:
    """High watermark per partition, or None when the topic does not exist."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        for attempt in range(30):  # a broker just started may not have elected leaders yet
            try:
                parts = [TopicPartition(topic, p) for p in meta.partitions]
                return {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            except KafkaException:  # e.g. NOT_LEADER_FOR_PARTITION right after a start
                if attempt == 29:
                    raise
                time.sleep(1)
        return None
    finally:
        c.close()


def _manifests(bootstrap: str) -> dict[str, dict[str, int]]:
    ends = end_offsets(bootstrap, MANIFEST_TOPIC)
    if not ends or not any(ends.values()):
        return {}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-manifest", "enable.auto.commit": False})
    c.assign([TopicPartition(MANIFEST_TOPIC, p, 0) for p in ends])
    found: dict[str, dict[str, int]] = {}
    left, deadline = sum(ends.values()), time.monotonic() + 10
    while left > 0 and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                left -= 1
                found[(m.key() or b"").decode()] = json.loads(m.value() or b"{}")
    c.close()
    return found


def topic_name(
    prefix: str,
    cfg: GenerateConfig,
    partitions: int,
    schema_tag: str,
    limit: int | None,
    key_by: KeyBy = "account",
) -> str:
    # the key decides each record's partition: a topic keyed otherwise is another topic (the
    # names of before, without it, are those of topics keyed by conversation)
    keyed = "" if key_by == "conversation" else f"|key={key_by}"
    digest = hashlib.sha256(f"{cfg!r}|{partitions}|{schema_tag}|{limit}{keyed}".encode()).hexdigest()[:8]
    return f"{prefix}-{limit or cfg.events}ev-{cfg.conversations}conv-{cfg.accounts}acc-{digest}"


def ensure_events(
    bootstrap: str,
    prefix: str,
    cfg: GenerateConfig,
    partitions: int = 6,
    limit: int | None = None,
    codec: Any = None,
    key_by: KeyBy = "account",
) -> tuple[str, int, float | None]:
    """A topic holding the generated events, produced by the gateway's intake unless cached.

    ``cfg.events`` is approximate; with ``limit`` the first ``limit`` records are produced
    (ask the generator for a few percent more) and fewer is an error. ``codec``: the
    events codec (default single-object; a Confluent one names its schema id in the topic).
    ``key_by``: the records' Kafka key (`producer.mapping.KEY_BY`), so their partitions.

    Returns (topic, records, seconds spent producing or None when the topic was reused).
    """
    import schemas
    from producer.intake import Prepared, prepare

    codec = codec or schemas.conversation_codec()
    tag = ",".join(f"{k}={v.decode()}" for k, v in codec.headers("conversation.closed") if "schema" in k)
    if codec.schema_id is not None:
        tag += f",confluent-id={codec.schema_id}"
    topic = topic_name(prefix, cfg, partitions, tag, limit, key_by)
    ends = end_offsets(bootstrap, topic)
    if ends is not None and _manifests(bootstrap).get(topic) == {str(p): n for p, n in ends.items()}:
        return topic, sum(ends.values()), None
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if ends is not None:  # partly produced by an interrupted run
        admin.delete_topics([topic])[topic].result(30)
        time.sleep(2)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 50, "compression.type": "lz4", "batch.size": 1 << 20,
                         "queue.buffering.max.messages": 500_000})  # fmt: skip
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    started, sent = time.perf_counter(), 0
    for body in generate_webhooks(cfg):
        p = prepare(body, codec, key_by=key_by)
        if not isinstance(p, Prepared):
            continue
        while True:
            try:
                producer.produce(topic, p.value, p.key, headers=[*p.headers], on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
        if sent == limit:
            break
    if producer.flush(120) or errors:
        raise SystemExit(f"producing to {topic} failed: {errors[:3]}")
    seconds = time.perf_counter() - started
    if limit is not None and sent < limit:
        raise SystemExit(f"the generator gave {sent} records, fewer than {limit}: ask for more events")
    ends = end_offsets(bootstrap, topic) or {}
    if sum(ends.values()) != sent:
        raise SystemExit(f"{topic} holds {sum(ends.values())} records, {sent} were acknowledged")
    manifest = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    manifest.produce(MANIFEST_TOPIC, json.dumps({str(p): n for p, n in ends.items()}), topic)
    manifest.flush(30)
    return topic, sent, seconds


def machine() -> dict[str, str]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "unknown",
    )  # fmt: skip
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))  # fmt: skip
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "ram": f"{mem_kb / 1024**2:.1f} GiB"}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``VmHWM``/``VmRSS``-style line of /proc/<pid>/status, in kB (None once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith(field + ":")), None)
