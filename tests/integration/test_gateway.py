"""The gateway as senders see it: a real `convmetrics gateway` process on the real broker.

Every status code the README promises is asserted here, and every 202 is checked
against what a consumer reads back from the topic.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook as Reference

from schemas import conversation_codec
from support.gateway import GatewayProcess

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEED: dict[str, Any] = json.loads((FIXTURES / "seed_conversation_closed.json").read_text())
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "conversation_event" / "v1.json").read_text())
SECRET = "whsec_" + base64.b64encode(b"gateway-test-secret-0123456789ab").decode()
ROTATED = "whsec_" + base64.b64encode(b"gateway-test-secret-NEW-456789ab").decode()
CODEC = conversation_codec()


def seed(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED)
    body["id"] = str(uuid.uuid4())
    body.update(changes)
    return body


def expected_for(body: dict[str, Any]) -> dict[str, Any]:
    exp = copy.deepcopy(EXPECTED)
    exp.update(id=body["id"], event=body["event"], account=body["account"])
    exp["data"]["id"] = body["data"]["id"]
    exp["data"]["channelType"] = body["data"]["channelType"]
    return exp


def signed(body: bytes, secret: str = SECRET, *, at: float | None = None) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    stamp = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Reference(secret).sign(msg_id, stamp, body.decode()),
    }


def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> Any:
    """The message at (partition, offset), as the consumer side would read it."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg
        raise AssertionError(f"nothing at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


def topic_size(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        consumer.close()


def as_json(value: Any) -> Any:
    """A decoded record as plain JSON; its receive time (v2) must be the gateway's 'now'."""
    out = json.loads(json.dumps(value))
    if isinstance(out, dict) and "receivedAtMillis" in out:
        received = out.pop("receivedAtMillis")
        assert abs(received - time.time() * 1000) < 300_000, f"receive time {received} is not now"
    return out


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap: str) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(kafka_bootstrap, f"gw-{uuid.uuid4().hex[:10]}", "--max-body-bytes", "65536")
    yield gw
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete
    assert gw.stop() in (0, -signal.SIGTERM), gw.output()
    # uvicorn's own lines in the process's one log format (timestamped, named), not its own
    assert re.search(
        r"\d{4}-\d\d-\d\d [\d:,]+ INFO uvicorn.error: Application shutdown complete", gw.output()
    )


@pytest.fixture(scope="module", params=["variable", "file"])
def signed_gateway(
    kafka_bootstrap: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The secrets in CONVMETRICS_WEBHOOK_SECRETS, or in a file (a mounted Secret: one a
    line, a comment), `--webhook-secrets-file`."""
    topic = f"gws-{uuid.uuid4().hex[:10]}"
    if request.param == "variable":
        gw = GatewayProcess(kafka_bootstrap, topic, secrets=f"{ROTATED},{SECRET}")
    else:
        path = tmp_path_factory.mktemp("secrets") / "webhook-secrets"
        path.write_text(f"# the new one first, the old one until every sender has it\n{ROTATED}\n{SECRET}\n")
        gw = GatewayProcess(kafka_bootstrap, topic, "--webhook-secrets-file", str(path))
    yield gw
    gw.stop()


def post(
    gw: GatewayProcess, body: Any, path: str = "/webhooks", *, timeout: float = 30, **kw: Any
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gw.url}{path}", content=content, timeout=timeout, **kw)


def test_posted_webhook_is_acknowledged_durable_and_reads_back_equal(
    gateway: GatewayProcess, kafka_bootstrap: str
) -> None:
    body = seed(account=7)
    r = post(gateway, body)
    assert r.status_code == 202, r.text
    ack = r.json()
    assert ack["id"] == body["id"] and ack["topic"] == gateway.topic and ack["event"] == "conversation.closed"
    msg = read_at(kafka_bootstrap, gateway.topic, ack["partition"], ack["offset"])
    assert as_json(CODEC.decode(msg.value())) == expected_for(body)
    assert msg.key() == b"7"  # keyed by account (`--key-by`, producer.mapping.KEY_BY)
    assert dict(msg.headers())["convmetrics-event-type"] == b"conversation.closed"


def with_conversation(body: dict[str, Any], conversation: int) -> dict[str, Any]:
    body["data"] = {**body["data"], "id": conversation}
    return body


def test_one_accounts_conversations_stay_on_one_partition_in_order(gateway: GatewayProcess) -> None:
    acks = [
        post(gateway, with_conversation(seed(account=99, event=e), conversation)).json()
        for conversation in (1, 2, 3)
        for e in ("conversation.created", "conversation.assigned", "conversation.closed")
    ]
    assert len({a["partition"] for a in acks}) == 1
    assert [a["offset"] for a in acks] == sorted(a["offset"] for a in acks)
    # and accounts are spread over the topic's partitions (6 here)
    spread = {post(gateway, seed(account=a)).json()["partition"] for a in range(1000, 1030)}
    assert len(spread) > 1


@pytest.mark.parametrize("field", ["closed_at", "createdAt"])
def test_both_envelope_time_names_are_accepted(
    gateway: GatewayProcess, kafka_bootstrap: str, field: str
) -> None:
    body = seed()
    body[field] = body.pop("createdAt")
    r = post(gateway, body)
    assert r.status_code == 202, r.text
    decoded = CODEC.decode(
        read_at(kafka_bootstrap, gateway.topic, r.json()["partition"], r.json()["offset"]).value()
    )
    assert decoded["createdAt"] == SEED["createdAt"]


def test_unknown_extra_fields_dropped_and_unknown_channel_type_kept(
    gateway: GatewayProcess, kafka_bootstrap: str
) -> None:
    body = seed(brandNew={"x": 1})
    body["data"]["channelType"] = "QUANTUM_PIGEON"
    body["data"]["participants"][0]["user"]["email"] = "a@b.c"
    r = post(gateway, body)
    assert r.status_code == 202, r.text
    decoded = CODEC.decode(
        read_at(kafka_bootstrap, gateway.topic, r.json()["partition"], r.json()["offset"]).value()
    )
    assert as_json(decoded) == expected_for(body)


def test_malformed_json_is_400(gateway: GatewayProcess) -> None:
    r = post(gateway, b'{"event": "conversation.closed",')
    assert r.status_code == 400 and r.json()["error"] == "MalformedJSONError"


def test_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    r = post(gateway, json.dumps(seed(pad="x" * 70_000)).encode())
    assert r.status_code == 413


def test_chunked_body_without_content_length_is_counted_while_streaming(gateway: GatewayProcess) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"event":"conversation.closed","pad":"'
        for _ in range(200):
            sent += 4096
            yield b"x" * 4096
        yield b'"}'

    r = httpx.post(f"{gateway.url}/webhooks", content=chunks(), timeout=30)
    assert r.status_code == 413
    assert "content-length" not in r.request.headers


def test_chunked_body_within_the_limit_is_accepted(gateway: GatewayProcess) -> None:
    raw = json.dumps(seed()).encode()
    r = httpx.post(f"{gateway.url}/webhooks", content=iter([raw[:100], raw[100:]]), timeout=30)
    assert r.status_code == 202, r.text


def test_invalid_conversation_event_is_422_naming_the_field(gateway: GatewayProcess) -> None:
    body = seed()
    body["data"]["participants"][1]["user"]["id"] = "agent-one"
    r = post(gateway, body)
    assert r.status_code == 422
    assert [p["loc"] for p in r.json()["problems"]] == ["data.participants.1.user.AppUser.id"]
    for bad in ("X" * 10_000, "<script>", "TELE GRAM", "TELEGRAM\n", "telegram"):  # bounded names
        body = seed()
        body["data"]["channelType"] = bad
        r = post(gateway, body)
        assert r.status_code == 422 and [p["loc"] for p in r.json()["problems"]] == ["data.channelType"], bad


def test_non_conversation_event_is_202_ignored_counted_not_produced(
    gateway: GatewayProcess, kafka_bootstrap: str
) -> None:
    def ignored() -> float:  # the module's gateway serves other tests too: count from here on
        for family in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics").text):
            for sample in family.samples:
                if sample.name == "convmetrics_gateway_events_ignored_total":
                    return sample.value
        return 0.0

    before, counted = topic_size(kafka_bootstrap, gateway.topic), ignored()
    r = post(gateway, {"event": "message.created", "id": "m-1", "data": {"text": "hi"}})
    assert r.status_code == 202 and r.json() == {"id": "m-1", "event": "message.created", "ignored": True}
    assert topic_size(kafka_bootstrap, gateway.topic) == before
    assert ignored() == counted + 1


def test_batch_answers_per_item(gateway: GatewayProcess, kafka_bootstrap: str) -> None:
    good, bad = seed(), seed()
    del bad["data"]["channelType"]
    items = [good, bad, {"event": "mention.created", "id": "n1"}, seed(closed_at=5)]
    r = post(gateway, items, "/webhooks/batch")
    assert r.status_code == 207, r.text
    out = r.json()
    assert [i["status"] for i in out["items"]] == [202, 422, 202, 202]
    assert (out["accepted"], out["ignored"], out["rejected"]) == (2, 1, 1)
    assert out["items"][1]["problems"][0]["loc"] == "data.channelType"
    assert out["items"][2]["ignored"] is True
    first = out["items"][0]
    msg = read_at(kafka_bootstrap, gateway.topic, first["partition"], first["offset"])
    assert as_json(CODEC.decode(msg.value())) == expected_for(good)


def test_every_batch_answer_names_its_own_record(gateway: GatewayProcess, kafka_bootstrap: str) -> None:
    """Many events of a batch share one wait: each answer still points at its own record."""
    bodies: list[Any] = []
    for i in range(300):
        body = seed(account=i % 7)
        body["data"]["id"] = i % 23
        bodies.append(body if i % 50 else {"event": "message.created", "id": f"m{i}"})
    bodies[3]["data"]["channelType"] = ""
    r = post(gateway, b"\n".join(json.dumps(b).encode() for b in bodies), "/webhooks/batch")
    assert r.status_code == 207, r.text
    out = r.json()
    assert (out["accepted"], out["ignored"], out["rejected"]) == (293, 6, 1)
    wanted: dict[tuple[int, int], Any] = {}
    for body, answer in zip(bodies, out["items"], strict=True):
        assert answer["id"] == body["id"] if answer["status"] == 202 else answer["index"] == 3
        if "offset" in answer:
            wanted[(answer["partition"], answer["offset"])] = body
    assert len(wanted) == 293  # no two answers share a record
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{uuid.uuid4()}"})
    try:
        consumer.assign([TopicPartition(gateway.topic, p, min(o for q, o in wanted if q == p))
                         for p in {p for p, _ in wanted}])  # fmt: skip
        seen = 0
        deadline = time.monotonic() + 30
        while seen < len(wanted) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            sent = wanted.get((msg.partition() or 0, msg.offset() or 0))
            if sent is None:
                continue
            seen += 1
            record = CODEC.decode(msg.value() or b"")
            assert (record["id"], record["account"], record["data"]["id"]) == (
                sent["id"], sent["account"], sent["data"]["id"],
            )  # fmt: skip
            assert msg.key() == str(sent["account"]).encode()
        assert seen == len(wanted)
    finally:
        consumer.close()


def test_ndjson_batch_all_good_is_202_and_bad_line_is_400_item(gateway: GatewayProcess) -> None:
    lines = [json.dumps(seed()).encode() for _ in range(5)]
    assert post(gateway, b"\n".join(lines), "/webhooks/batch").status_code == 202
    r = post(gateway, b"\n".join([*lines[:2], b"{nope", lines[2]]), "/webhooks/batch")
    assert r.status_code == 207
    assert [(i["line"], i["status"]) for i in r.json()["items"]] == [(1, 202), (2, 202), (3, 400), (4, 202)]


def test_operations_endpoints(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = httpx.get(f"{gateway.url}/metrics").text
    for name in (
        'convmetrics_gateway_requests_total{route="/webhooks",status="202"}',
        'convmetrics_gateway_events_produced_total{event="conversation.closed"}',
        "convmetrics_gateway_produce_latency_seconds_bucket",
        "convmetrics_gateway_requests_in_flight",
    ):
        assert name in metrics
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    assert doc["paths"]["/webhooks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(doc["paths"]["/webhooks"]["post"]["responses"]) == {"202", "400", "401", "413", "422", "503"}


def test_signed_requests_are_verified_before_anything_is_produced(
    signed_gateway: GatewayProcess, kafka_bootstrap: str
) -> None:
    gw = signed_gateway
    raw = json.dumps(seed()).encode()
    cases = {
        "unsigned": {},
        "wrong secret": signed(raw, "whsec_" + base64.b64encode(b"not-the-secret-not-the-secret!!").decode()),
        "expired": signed(raw, at=time.time() - 600),
        "malformed header": {**signed(raw), "webhook-signature": "v1;nonsense"},
        "bad timestamp": {**signed(raw), "webhook-timestamp": "yesterday"},
    }
    for name, headers in cases.items():
        r = post(gw, raw, headers=headers)
        assert r.status_code == 401, (name, r.text)
    assert post(gw, b"{not json", headers={}).status_code == 401  # checked before parsing
    assert topic_size(kafka_bootstrap, gw.topic) == 0
    assert post(gw, raw, headers=signed(raw)).status_code == 202
    other = json.dumps(seed()).encode()
    assert post(gw, other, headers=signed(other, ROTATED)).status_code == 202
    batch = json.dumps([seed()]).encode()
    assert post(gw, batch, "/webhooks/batch", headers=signed(batch)).status_code == 202
    assert post(gw, batch, "/webhooks/batch").status_code == 401
    assert topic_size(kafka_bootstrap, gw.topic) == 3
