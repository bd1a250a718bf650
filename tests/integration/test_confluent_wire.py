"""The Confluent wire format against a real schema registry (Apicurio, or the configured one)
and the real broker: `schemas push`, the gateway over HTTP, the metrics topics, a topic
holding both framings, and the registry missing at the gateway's start. The reader that
checks what we wrote is confluent-kafka's own `AvroDeserializer` with its own
`SchemaRegistryClient`: no code of ours on the reading side."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.stream.dlq import H_ERROR, H_ERROR_TYPE
from convmetrics.generate import GenerateConfig, generate_webhooks
from producer.mapping import CONVERSATION_EVENTS, to_record
from producer.models import Webhook
from schemas import CONVERSATION_EVENT, Codec, subject
from schemas.codec import HEADER_CONTENT_TYPE, HEADER_EVENT_TYPE, HEADER_SUBJECT, HEADER_VERSION
from schemas.registry import load_pins
from schemas.schema_registry import RegistryClient, RegistrySettings, mismatches
from support.gateway import GatewayProcess, free_port
from support.pipeline import (
    ConsumerProcess,
    api_view,
    compare_with_truth,
    produce_raw,
    produce_webhooks,
    wait_caught_up,
)
from support.truth import compute_truth

FOREIGN = {"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "id", "type": "long"}]}


def push(registry: str, *topics: str) -> subprocess.CompletedProcess[str]:
    """`convmetrics schemas push` for events, metrics and metric-rows topics named `topics`."""
    flags = [f for flag, t in zip(("--events-topic", "--metrics-topic", "--metric-rows-topic"), topics,
                                  strict=False) for f in (flag, t)]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "convmetrics", "schemas", "push", "--schema-registry-url", registry, *flags],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def conversation_webhooks(config: GenerateConfig) -> list[dict[str, Any]]:
    return [w for w in generate_webhooks(config) if w["event"] in CONVERSATION_EVENTS]


def names(prefix: str) -> tuple[str, str, str]:
    t = f"{prefix}-{uuid.uuid4().hex[:10]}"
    return t, f"{t}-metrics", f"{t}-rows"


def untuple(value: Any) -> Any:
    """Our codec returns a union of records as (name, record); confluent-kafka as the record."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return untuple(value[1])
    if isinstance(value, dict):
        return {k: untuple(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untuple(v) for v in value]
    return value


def read_confluent(
    bootstrap: str, topic: str, registry: str, expect: int | None = None
) -> list[tuple[Message, Any]]:
    """Every record of `topic`, each with what confluent-kafka's AvroDeserializer makes of it."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    out: list[tuple[Message, Any]] = []
    idle = 0
    try:
        while (expect is None or len(out) < expect) and idle < 8:
            msgs = [m for m in c.consume(5000, 0.5) if m.error() is None]
            idle = 0 if msgs else idle + 1
            for m in msgs:
                ctx = SerializationContext(topic, MessageField.VALUE, m.headers())
                out.append((m, deserialize(m.value(), ctx)))
    finally:
        c.close()
    return out


def test_schemas_push_registers_every_version_once_and_verifies(schema_registry: str) -> None:
    events, metrics, rows = names("push")
    first = push(schema_registry, events, metrics, rows)
    assert first.returncode == 0, first.stderr
    assert (
        f"{events}-value: conversation_event v1 id" in first.stdout
        and "(2 new; FULL_TRANSITIVE)" in first.stdout
    )
    again = push(schema_registry, events, metrics, rows)
    assert again.returncode == 0, again.stderr
    # idempotent: the same ids, nothing new
    assert "(0 new" in again.stdout and not re.search(r"\(\d*[1-9]\d* new", again.stdout)
    assert re.sub(r"\(\d+ new", "(N new", again.stdout) == re.sub(r"\(\d+ new", "(N new", first.stdout)
    client = SchemaRegistryClient({"url": schema_registry})
    ours = RegistryClient(RegistrySettings(schema_registry))
    for topic, subj in ((events, "conversation_event"), (metrics, "closure_metrics"), (rows, "metric_rows")):
        assert client.get_compatibility(f"{topic}-value") == "FULL_TRANSITIVE"
        held = ours.registered(f"{topic}-value")
        assert len(held) == len(subject(subj).versions)
        assert mismatches(f"{topic}-value", subject(subj), load_pins(), held, complete=True) == []


def test_schemas_push_rejects_a_registry_holding_another_schema(schema_registry: str) -> None:
    events, metrics, rows = names("clash")
    SchemaRegistryClient({"url": schema_registry}).register_schema(
        f"{metrics}-value", Schema(json.dumps(FOREIGN), "AVRO")
    )
    out = push(schema_registry, events, metrics, rows)
    assert out.returncode == 1, out.stdout
    assert f"registry subject {metrics}-value version 1 holds shop.Order" in out.stderr
    assert "not a version of closure_metrics in this repo" in out.stderr


def test_gateway_writes_confluent_records_that_confluent_kafka_reads_back_equal(
    kafka_bootstrap: str, schema_registry: str
) -> None:
    topic, _, _ = names("gwconf")
    assert push(schema_registry, topic).returncode == 0
    bodies = conversation_webhooks(GenerateConfig(seed=5, events=400, accounts=4, conversations=60,
                                                  duplicate_rate=0.0))  # fmt: skip
    gw = GatewayProcess(
        kafka_bootstrap, topic, "--wire-format", "confluent", "--schema-registry-url", schema_registry
    )
    try:
        for body in bodies[:50]:
            assert httpx.post(f"{gw.url}/webhooks", json=body, timeout=30).status_code == 202
        ndjson = b"\n".join(json.dumps(b).encode() for b in bodies[50:])
        r = httpx.post(f"{gw.url}/webhooks/batch", content=ndjson, timeout=60)
        assert r.status_code == 202, r.text
    finally:
        assert gw.stop() in (0, -signal.SIGTERM), gw.output()
    schema_id = RegistryClient(RegistrySettings(schema_registry)).schema_id(
        topic, subject(CONVERSATION_EVENT).latest
    )
    got = read_confluent(kafka_bootstrap, topic, schema_registry, expect=len(bodies))
    assert len(got) == len(bodies)
    by_id = {}
    for m, record in got:
        value = m.value() or b""
        assert value[:5] == b"\x00" + schema_id.to_bytes(4, "big")
        headers = dict(m.headers() or [])
        assert headers[HEADER_SUBJECT] == b"conversation_event" and headers[HEADER_VERSION] == b"2"
        assert headers[HEADER_CONTENT_TYPE].endswith(b"framing=confluent")
        assert headers[HEADER_EVENT_TYPE] == record["event"].encode()
        by_id[record["id"]] = record
    for body in bodies:  # every event, field for field, as the single-object path maps it
        record = by_id[body["id"]]
        expected = to_record(Webhook.model_validate(body), received_at_millis=record["receivedAtMillis"])
        assert record == untuple(expected)
        assert record["receivedAtMillis"] > 0


def test_metrics_topics_in_confluent_format_read_back_equal(
    kafka_bootstrap: str, new_topic: Callable[..., str], schema_registry: str, tmp_path: Path
) -> None:
    topic = new_topic(3, prefix="mconf")
    metrics, rows = f"{topic}-metrics", f"{topic}-rows"
    assert push(schema_registry, topic, metrics, rows).returncode == 0
    webhooks = list(generate_webhooks(GenerateConfig(seed=9, events=3_000, accounts=6, conversations=400)))
    produce_webhooks(kafka_bootstrap, topic, webhooks)
    port = free_port()
    extra = ["--metrics-topic", metrics, "--metric-rows-topic", rows, "--wire-format", "confluent",
             "--schema-registry-url", schema_registry]  # fmt: skip
    proc = ConsumerProcess(
        kafka_bootstrap, topic, tmp_path / "m.db", tmp_path / "c.log", http_port=port, extra=extra
    )
    try:
        wait_caught_up(kafka_bootstrap, topic, tmp_path / "m.db", [proc])
        api = api_view(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:  # publication follows the commit: the metrics topic's, then the rows'
            latest = {
                (m.key() or b"").decode(): r
                for m, r in read_confluent(kafka_bootstrap, metrics, schema_registry)
            }
            generic = {
                (m.key() or b"").decode(): (m, r)
                for m, r in read_confluent(kafka_bootstrap, rows, schema_registry)
            }
            if (set(latest) == set(api) and set(api) <= set(generic)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        assert proc.stop() == 0, proc.tail()
    assert api and set(latest) == set(api) and set(api) <= set(generic)  # generic: more groupings too
    for key, row in api.items():
        got = latest[key]
        assert (got["closures"], got["reopens"], got["closedUnread"]) == (
            row["closures"], row["reopens"], row["closed_unread"]), key  # fmt: skip
        assert got["timeToClose"]["count"] == row["time_to_close"]["count"]
        assert got["timeToClose"]["p99"] == row["time_to_close"]["p99"]
    ours = RegistryClient(RegistrySettings(schema_registry))
    rows_id = ours.schema_id(rows, subject("metric_rows").latest)
    reader = Codec(subject("metric_rows"), resolve_id=ours.schema_by_id)
    for key, (m, record) in generic.items():  # equal to what our own reader makes of the bytes
        assert (m.value() or b"")[:5] == b"\x00" + rows_id.to_bytes(4, "big")
        assert record == untuple(reader.decode(m.value() or b"")), key
        if key in api:  # the groupings /v1/closures serves
            assert record["counters"]["closures"] == api[key]["closures"]


def test_a_topic_holding_both_framings_gives_exact_totals_and_dead_letters_what_is_not_ours(
    kafka_bootstrap: str, new_topic: Callable[..., str], schema_registry: str, tmp_path: Path
) -> None:
    topic = new_topic(3, prefix="mixed")
    assert push(schema_registry, topic).returncode == 0
    webhooks = list(generate_webhooks(GenerateConfig(seed=21, events=6_000, accounts=8, conversations=700,
                                                     duplicate_rate=0.05)))  # fmt: skip
    truth = compute_truth(webhooks)
    ours = RegistryClient(RegistrySettings(schema_registry))
    confluent = Codec(
        subject(CONVERSATION_EVENT), schema_id=ours.schema_id(topic, subject(CONVERSATION_EVENT).latest)
    )
    chunks = [webhooks[i : i + 500] for i in range(0, len(webhooks), 500)]
    for i, chunk in enumerate(chunks):  # the deployment switches back and forth
        produce_webhooks(kafka_bootstrap, topic, chunk, codec=confluent if i % 2 else None)
    foreign_id = SchemaRegistryClient({"url": schema_registry}).register_schema(
        f"other-{uuid.uuid4().hex[:8]}-value", Schema(json.dumps(FOREIGN), "AVRO")
    )
    body = confluent.encode(
        to_record(Webhook.model_validate(next(w for w in webhooks if w["event"] in CONVERSATION_EVENTS)))
    )[5:]
    poison = [
        (b"unknown", b"\x00\x7f\xff\xff\xf0" + body),
        (b"foreign", b"\x00" + foreign_id.to_bytes(4, "big") + body),
    ]
    produce_raw(kafka_bootstrap, topic, poison)
    port = free_port()
    extra = ["--schema-registry-url", schema_registry]
    proc = ConsumerProcess(
        kafka_bootstrap, topic, tmp_path / "m.db", tmp_path / "c.log", http_port=port, extra=extra
    )
    try:
        wait_caught_up(kafka_bootstrap, topic, tmp_path / "m.db", [proc])
        compare_with_truth(f"http://127.0.0.1:{port}", truth)
    finally:
        assert proc.stop() == 0, proc.tail()
    dead = {
        (m.key() or b""): dict(m.headers() or []) for m, _ in _read_raw(kafka_bootstrap, f"{topic}.dlq", 2)
    }
    assert set(dead) == {b"unknown", b"foreign"}
    assert dead[b"unknown"][H_ERROR_TYPE] == b"UnknownSchemaIdError"
    assert b"schema id 2147483632: the schema registry does not know it" in dead[b"unknown"][H_ERROR]
    assert dead[b"foreign"][H_ERROR_TYPE] == b"ForeignSchemaError"
    assert b"it is shop.Order, not io.convmetrics.events.ConversationEvent" in dead[b"foreign"][H_ERROR]


def _read_raw(bootstrap: str, topic: str, expect: int) -> list[tuple[Message, None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    out: list[tuple[Message, None]] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out += [(m, None) for m in c.consume(100, 0.5) if m.error() is None]
    finally:
        c.close()
    return out


@pytest.mark.parametrize("case", ["registry down", "schema not pushed"])
def test_gateway_refuses_to_start_without_its_schema_in_the_registry(
    kafka_bootstrap: str, schema_registry: str, case: str
) -> None:
    registry = (
        f"http://127.0.0.1:{free_port()}/apis/ccompat/v7" if case == "registry down" else schema_registry
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "convmetrics", "gateway", "--bootstrap-servers", kafka_bootstrap,
         "--topic", f"never-pushed-{uuid.uuid4().hex[:8]}", "--port", str(free_port()),
         "--wire-format", "confluent", "--schema-registry-url", registry],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert time.monotonic() - started < 30  # refused at once: no hang, no retry loop
    assert "cannot write the confluent wire format" in out.stderr
    if case == "registry down":
        assert f"schema registry at {registry} did not answer" in out.stderr
    else:
        assert "run `convmetrics schemas push` (with --events-topic never-pushed-" in out.stderr
        assert "-value" in out.stderr


def test_produce_and_dlq_replay_write_the_confluent_format(
    kafka_bootstrap: str, schema_registry: str, tmp_path: Path
) -> None:
    topic, _, _ = names("prodconf")
    assert push(schema_registry, topic).returncode == 0
    bodies = conversation_webhooks(GenerateConfig(seed=7, events=300, accounts=3, conversations=40,
                                                  duplicate_rate=0.0))  # fmt: skip
    path = tmp_path / "w.ndjson"
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    base = [sys.executable, "-m", "convmetrics"]
    out = subprocess.run(
        [*base, "produce", str(path), "--no-progress", "--bootstrap-servers", kafka_bootstrap,
         "--topic", topic, "--partitions", "1", "--wire-format", "confluent",
         "--schema-registry-url", schema_registry],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    got = read_confluent(kafka_bootstrap, topic, schema_registry, expect=len(bodies))
    assert sorted(r["id"] for _, r in got) == sorted(b["id"] for b in bodies)
    # a single-object record dead-lettered earlier is replayed with the Confluent head
    single = Codec(subject(CONVERSATION_EVENT)).encode(got[0][1])
    headers = [("convmetrics-dlq-source-topic", topic.encode()), ("convmetrics-dlq-source-partition", b"0"),
               ("convmetrics-dlq-source-offset", b"0"), (HEADER_CONTENT_TYPE, b"x")]  # fmt: skip
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(f"{topic}.dlq", key=b"replayed", value=single, headers=headers)
    assert p.flush(30) == 0
    out = subprocess.run(
        [*base, "dlq", "replay", "--bootstrap-servers", kafka_bootstrap, "--topic", topic,
         "--idle-timeout", "3", "--group", f"replay-{uuid.uuid4().hex[:6]}", "--wire-format", "confluent",
         "--schema-registry-url", schema_registry],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "replayed 1 record" in out.stdout, out.stdout + out.stderr
    again = read_confluent(kafka_bootstrap, topic, schema_registry, expect=len(bodies) + 1)
    replayed = [(m, r) for m, r in again if m.key() == b"replayed"]
    assert len(replayed) == 1 and (replayed[0][0].value() or b"")[:1] == b"\x00"
    assert replayed[0][1] == got[0][1]
