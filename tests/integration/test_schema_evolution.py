"""conversation_event v1 -> v2 on a real broker: old records keep counting, and a build that
knows only v1 still reads what the new gateway writes (forward compatibility)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

from convmetrics.generate import GenerateConfig, generate_webhooks
from convmetrics.localkafka import LocalBroker
from producer.intake import Prepared, prepare
from schemas import Codec, Subject, subject
from schemas.topic_registry import TopicSchemaResolver
from support.gateway import GatewayProcess, free_port
from support.pipeline import ConsumerProcess, compare_with_truth, wait_caught_up
from support.truth import compute_truth

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def produce_with(bootstrap: str, topic: str, codec: Codec, webhooks: list[dict[str, Any]]) -> set[int]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    versions = set()
    for body in webhooks:
        item = prepare(body, codec, received_at_millis=int(time.time() * 1000))
        if isinstance(item, Prepared):
            versions.add(codec.version_of(item.value).version)
            producer.produce(topic, key=item.key, value=item.value, headers=item.headers)
    assert producer.flush(60) == 0
    return versions


def test_a_topic_with_both_versions_counts_exactly(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    cfg = GenerateConfig(
        seed=5, events=6_000, accounts=20, conversations=1_000, duplicate_rate=0.05, late_rate=0.05
    )
    webhooks = [dict(w) for w in generate_webhooks(cfg)]
    topic = new_topic(6, prefix="evolution")
    subj = subject("conversation_event")
    half = len(webhooks) // 2
    old = produce_with(kafka_bootstrap, topic, Codec(subj, writer_version=1), webhooks[:half])
    new = produce_with(kafka_bootstrap, topic, Codec(subj), webhooks[half:])
    assert (old, new) == ({1}, {2})
    port = free_port()
    proc = ConsumerProcess(kafka_bootstrap, topic, tmp_path / "m.db", tmp_path / "c.log", http_port=port)
    try:
        wait_caught_up(kafka_bootstrap, topic, tmp_path / "m.db", [proc])
        compare_with_truth(f"http://127.0.0.1:{port}", compute_truth(webhooks))
    finally:
        proc.stop()


def test_a_v1_only_build_reads_what_the_new_gateway_writes(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    gateway = GatewayProcess(kafka_bootstrap, new_topic(1, prefix="fwd"))  # publishes its schemas at start
    try:
        body = json.loads((FIXTURES / "seed_conversation_closed.json").read_text())
        r = httpx.post(f"{gateway.url}/webhooks", json=body, timeout=30)
        assert r.status_code == 202, r.text
        ack = r.json()
    finally:
        gateway.stop()
    a_v1_only_build_reads(
        kafka_bootstrap, TopicPartition(ack["topic"], ack["partition"], ack["offset"]), body
    )


def test_a_v1_only_build_reads_what_produce_alone_wrote(
    local_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """A backfill-only deployment (no gateway ever ran on the cluster: a broker of its own):
    `produce` puts the event schemas in the schema topic as the gateway does."""
    bootstrap = local_broker().bootstrap_servers
    body = json.loads((FIXTURES / "seed_conversation_closed.json").read_text())
    topic, ndjson = "backfilled", tmp_path / "backfill.ndjson"
    ndjson.write_text(json.dumps(body) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "convmetrics", "produce", str(ndjson),
         "--bootstrap-servers", bootstrap, "--topic", topic, "--partitions", "1", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    a_v1_only_build_reads(bootstrap, TopicPartition(topic, 0, 0), body)


def a_v1_only_build_reads(bootstrap: str, where: TopicPartition, body: dict[str, Any]) -> None:
    """The record at `where` (written by this build: v2) decodes in a build that ships only
    v1, which looks v2 up in the schema topic: the same view but the field v2 added."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fwd-reader", "enable.auto.commit": False})
    c.assign([where])
    msg = c.poll(30)
    c.close()
    assert msg is not None and msg.error() is None
    value = msg.value()
    assert value is not None

    full = subject("conversation_event")
    assert full.latest.version >= 2 and value[2:10] == full.latest.fingerprint
    previous_release = Subject(full.name, full.versions[:1])  # a build that ships only v1
    reader = Codec(previous_release, resolve_unknown=TopicSchemaResolver(bootstrap))
    old_view = reader.decode(value)
    new_view = Codec(full).decode(value)
    assert "receivedAtMillis" not in old_view and new_view["receivedAtMillis"] > 0
    assert old_view == {k: v for k, v in new_view.items() if k != "receivedAtMillis"}
    assert old_view["data"]["closedAt"] == body["data"]["closedAt"]


def test_schemas_the_schema_topic_refuses_are_an_error_not_a_silent_pass(kafka_bootstrap: str) -> None:
    """A write the broker refuses (here: records larger than the topic takes; in a secured
    cluster, a topic this client may not write) comes back as a delivery error, not as
    an unacknowledged record: publish_schemas says so (the gateway then retries and says
    why; a metrics-topic publisher warns) instead of passing."""
    import uuid

    import pytest
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from schemas.exceptions import SchemaError
    from schemas.topic_registry import publish_schemas

    topic = f"small-schemas-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "200"})])[topic].result(30)
    with pytest.raises(
        SchemaError, match=f"schema topic {topic} refused the schemas of conversation_event: "
    ):
        publish_schemas(kafka_bootstrap, subject("conversation_event"), topic=topic, timeout=30)
