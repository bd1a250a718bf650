"""The gateway when things change under it: broker down and back, SIGTERM, backfills."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from test_gateway import CODEC, GatewayProcess, post, read_at, seed, topic_size

from convmetrics.localkafka import LocalBroker


def wait_ready(gw: GatewayProcess, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200:
            return
        time.sleep(0.5)
    raise AssertionError("gateway never became ready again")


def test_broker_stopped_is_503_with_retry_after_and_the_retry_lands_after_restart(
    local_broker: Callable[..., LocalBroker],
) -> None:
    broker = local_broker()
    gw = GatewayProcess(broker.bootstrap_servers, "events", "--delivery-timeout", "2", "--retry-after", "3")
    try:
        assert post(gw, seed()).status_code == 202
        broker.stop()
        body = seed()
        # answered within the delivery timeout (2 s), not left hanging: a 10 s bound on the
        # request, no measurement of the clock
        r = post(gw, body, timeout=10)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "3"
        batch = post(gw, [seed(), seed()], "/webhooks/batch")
        assert batch.status_code == 503 and batch.headers["retry-after"] == "3"
        assert {i["status"] for i in batch.json()["items"]} == {503}
        assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 503

        broker.start()
        wait_ready(gw)
        deadline = time.monotonic() + 60
        while (r := post(gw, body)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(float(r.headers["retry-after"]))  # what a sender does
        assert r.status_code == 202, r.text
        ack = r.json()
        msg = read_at(broker.bootstrap_servers, "events", ack["partition"], ack["offset"])
        assert CODEC.decode(msg.value())["id"] == body["id"]
    finally:
        gw.stop()


def test_sigterm_answers_in_flight_requests_then_exits(kafka_bootstrap: str) -> None:
    gw = GatewayProcess(kafka_bootstrap, f"gwt-{uuid.uuid4().hex[:10]}")
    body = seed()
    raw = json.dumps(body).encode()
    head = (
        "POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(head.encode() + raw[:50])  # the request is in flight: half its body is sent
        time.sleep(0.3)  # for the server to read the head: nothing outside it shows when it has
        gw.proc.send_signal(signal.SIGTERM)
        refused = False
        deadline = time.monotonic() + 10
        while not refused and time.monotonic() < deadline:  # shutdown began: no new connections
            try:
                httpx.get(f"{gw.url}/healthz", timeout=2)
            except httpx.TransportError:
                refused = True
        assert gw.proc.poll() is None, "gateway exited with a request in flight"
        sock.sendall(raw[50:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 202 Accepted", response
    ack = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert gw.stop() in (0, -signal.SIGTERM)
    assert refused
    assert (
        CODEC.decode(read_at(kafka_bootstrap, gw.topic, ack["partition"], ack["offset"]).value())["id"]
        == body["id"]
    )


def run_produce(path: Path, bootstrap: str, topic: str, *more: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "convmetrics",
        "produce",
        str(path),
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
    ]
    return subprocess.run(
        [*cmd, "--no-progress", *more], capture_output=True, text=True, timeout=120, check=False
    )


def test_produce_file_sends_valid_items_and_lists_rejected_ones(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(3)
    bad: dict[str, Any] = seed()
    bad["data"]["id"] = "not-a-number"
    bad["id"] = "[/evt-1]"  # listed as it is, not read as rich markup (it raised MarkupError)
    lines = [json.dumps(seed()), json.dumps(bad), "{truncated", "", json.dumps({"event": "message.created"})]
    lines += [json.dumps(seed(closed_at=1)) for _ in range(300)]
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n")
    done = run_produce(path, kafka_bootstrap, topic)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "304 items: 301 produced" in done.stdout
        and "1 ignored" in done.stdout
        and "2 rejected" in done.stdout
    )
    assert "data.id" in done.stdout and "malformed JSON" in done.stdout and "[/evt-1]" in done.stdout
    assert topic_size(kafka_bootstrap, topic) == 301

    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps([seed(), seed()]))
    done = run_produce(clean, kafka_bootstrap, topic)
    assert done.returncode == 0, done.stdout + done.stderr
    assert topic_size(kafka_bootstrap, topic) == 303

    # a topic that does not exist yet is created as the gateway creates it
    fresh = f"produced-{uuid.uuid4().hex[:8]}"
    done = run_produce(clean, kafka_bootstrap, fresh, "--partitions", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(fresh, timeout=10)
    assert len(meta.topics[fresh].partitions) == 4 and topic_size(kafka_bootstrap, fresh) == 2


def test_produce_stopped_mid_file_lands_what_it_read_and_says_so(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """SIGTERM (as Ctrl-C, and as a container's PID 1 gets it) stops `produce` reading; what
    it read is produced and reported, the exit status 130 says it did not finish."""
    topic = new_topic(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "convmetrics", "produce", "-", "--bootstrap-servers", kafka_bootstrap,
         "--topic", topic, "--no-progress"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write("".join(json.dumps(seed(closed_at=1)) + "\n" for _ in range(400)) + "{truncated\n")
    proc.stdin.flush()  # and kept open: produce waits for more
    deadline = time.monotonic() + 60
    while topic_size(kafka_bootstrap, topic) < 400:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "401 items: 400 produced to " in out and "1 rejected" in out and "malformed JSON" in out, out
    assert "convmetrics produce: stopped by SIGTERM after 401 items" in " ".join(err.split()), err
    assert "Traceback" not in err
    assert topic_size(kafka_bootstrap, topic) == 400


def test_no_create_topic_still_publishes_the_schemas(local_broker: Callable[..., LocalBroker]) -> None:
    """`--no-create-topic` (the topic is made by whoever runs the cluster): the gateway is
    ready once the topic's key is checked and still publishes its schemas, so that
    consumers older than it read what it writes (docs/schemas.md)."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from schemas.topic_registry import SCHEMA_TOPIC

    broker = local_broker()  # a fresh cluster: no schema topic yet
    topic = f"made-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    gw = GatewayProcess(broker.bootstrap_servers, topic, "--no-create-topic")
    try:
        assert post(gw, seed()).status_code == 202
        published = read_at(broker.bootstrap_servers, SCHEMA_TOPIC, 0, 0)
        assert published.key().decode().startswith("conversation_event:")
    finally:
        gw.stop()
