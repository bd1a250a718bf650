"""The whole pipeline against a real secured broker (SASL_SSL: SCRAM-SHA-512 over TLS, a CA
and broker certificate made by the test), as a managed Kafka runs: webhooks through the
gateway, the consumer and its metrics topic, read back from the API, exact."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from convmetrics.generate import GenerateConfig, generate_webhooks
from convmetrics.localkafka import LocalBroker
from support.gateway import GatewayProcess, free_port
from support.pipeline import ConsumerProcess, compare_with_truth, end_offsets, wait_caught_up
from support.secure_kafka import start_secured_broker
from support.truth import compute_truth


def test_the_pipeline_runs_over_sasl_ssl(local_broker: Callable[..., LocalBroker], tmp_path: Path) -> None:
    secured = start_secured_broker(local_broker, tmp_path)
    harness = secured.broker.bootstrap_servers  # the broker's PLAINTEXT listener: for checks only
    config = tmp_path / "client.properties"  # the gateway reads a properties file ...
    config.write_text("".join(f"{k}={v}\n" for k, v in secured.client_settings().items()))
    topic = "secured-events"
    gateway = GatewayProcess(secured.bootstrap, topic, "--kafka-config", str(config))
    webhooks = [dict(w) for w in generate_webhooks(GenerateConfig(seed=7, events=3_000, accounts=10))]
    api_port = free_port()
    store = tmp_path / "m.db"
    consumer = ConsumerProcess(  # ... the consumer the environment
        secured.bootstrap,
        topic,
        store,
        tmp_path / "c.log",
        http_port=api_port,
        env=secured.environment(),
        extra=["--metric-rows-topic", "secured-metric-rows"],
    )
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            for i in range(0, len(webhooks), 500):
                body = b"\n".join(orjson.dumps(w) for w in webhooks[i : i + 500])
                r = client.post(
                    "/webhooks/batch", content=body, headers={"content-type": "application/x-ndjson"}
                )
                assert r.status_code == 202, r.text[:500]
            assert client.get("/readyz").status_code == 200
        wait_caught_up(harness, topic, store, [consumer])
        compare_with_truth(f"http://127.0.0.1:{api_port}", compute_truth(webhooks))
        # published over SASL_SSL too: after the commit, all of a commit's rows in one flush
        # (~21,000 rows of the full set, a few seconds), so the topic may fill after the API does
        deadline = time.monotonic() + 60
        while not sum(end_offsets(harness, "secured-metric-rows").values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(end_offsets(harness, "secured-metric-rows").values()) > 0
    finally:
        gateway.stop()
        assert consumer.stop() == 0, consumer.tail()


def test_a_wrong_password_is_said_and_never_answered_2xx(
    local_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """Long-running servers keep running, not ready, and say why within a minute: the
    gateway's /readyz fails and webhooks get 503 + Retry-After; the consumer logs that Kafka
    refused the credentials, naming the settings. The password itself is printed nowhere."""
    secured = start_secured_broker(local_broker, tmp_path)
    wrong = "not-the-Password-42"
    config = tmp_path / "client.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in secured.client_settings(wrong).items()))
    gateway = GatewayProcess(  # logging everything: the password must not show even at DEBUG
        secured.bootstrap, "secured-events", "--kafka-config", str(config), ready=False, log_level="DEBUG"
    )
    # ... and librdkafka's own debug output, its configuration dump included
    env = {
        **secured.environment(wrong),
        "CONVMETRICS_LOG_LEVEL": "DEBUG",
        "CONVMETRICS_KAFKA_DEBUG": "conf,security",
    }
    api = free_port()
    consumer = ConsumerProcess(
        secured.bootstrap, "secured-events", tmp_path / "m.db", tmp_path / "c.log", env=env, http_port=api
    )
    try:
        consumer.wait_log("Kafka refused the credentials", timeout=60)
        assert "sasl.username, sasl.password and sasl.mechanism" in consumer.log.read_text()
        not_ready = httpx.get(f"http://127.0.0.1:{api}/readyz", timeout=10)  # the consumer's own API
        assert not_ready.status_code == 503 and "refused the credentials" in not_ready.json()["error"]
        webhook = dict(next(iter(generate_webhooks(GenerateConfig(seed=1, events=1)))))
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                ready = client.get("/readyz")
                assert ready.status_code == 503 and ready.headers["retry-after"], ready.text
                if "refused the credentials" in ready.json()["detail"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert "refused the credentials" in ready.json()["detail"], ready.text
            r = client.post(
                "/webhooks", content=orjson.dumps(webhook), headers={"content-type": "application/json"}
            )
            assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert gateway.proc.poll() is None and consumer.alive()  # still running, for when it is fixed
        assert "sasl.username" in gateway.output()
    finally:
        gateway.stop()
        consumer.stop(timeout=20)
    for text in (gateway.output(), consumer.log.read_text()):
        assert wrong not in text
    assert "sasl.password" in consumer.log.read_text()  # librdkafka dumped its configuration: redacted


def test_the_demo_runs_against_an_external_secured_cluster(
    local_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """`demo --bootstrap-servers --kafka-config`: no local broker; the gateway, the consumer
    and the demo's own probe all use the settings, and the numbers come out."""
    secured = start_secured_broker(local_broker, tmp_path)
    config = tmp_path / "client.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in secured.client_settings().items()))
    run = subprocess.run(
        [sys.executable, "-m", "convmetrics", "demo", "--once", "--events", "300",
         "--data-dir", str(tmp_path / "demo"), "--bootstrap-servers", secured.bootstrap,
         "--kafka-config", str(config)],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout + run.stderr
    assert f"Kafka: {secured.bootstrap}" in out and "starting a local broker" not in out, out[-2000:]
    sent = re.search(r"sent: (\d+) accepted .* (\d+) rejected", out)
    assert sent and int(sent.group(1)) > 0 and sent.group(2) == "0", out[-2000:]
    assert "Closure metrics by channel type" in out
    assert not (tmp_path / "demo" / "kafka").exists()  # no broker of its own
