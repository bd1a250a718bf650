"""The convmetrics image as docs/containers.md shows it in one's own integration tests:
Kafka through testcontainers, the gateway from the image, a webhook in and acknowledged
(202 only after acks=all); and the image's compiled parts and user."""

from __future__ import annotations

import time

import httpx

from convmetrics.generate import GenerateConfig, generate_webhooks
from convmetrics.localkafka.container import kafka_container
from support.compose import docker
from support.gateway import free_port

IMAGE = "convmetrics:latest"


def test_the_image_reports_its_compiled_parts_and_runs_as_non_root() -> None:
    version = docker("run", "--rm", IMAGE, "--version")
    assert "consumer fold: compiled (Rust)" in version and "gateway Avro writer: compiled (mypyc)" in version
    assert docker("run", "--rm", "--entrypoint", "id", IMAGE, "-u").strip() == "10001"


def test_a_gateway_container_acknowledges_a_webhook_on_a_kafka_container() -> None:
    from testcontainers.core.container import DockerContainer

    with kafka_container() as bootstrap:  # 127.0.0.1:<free port>
        port = free_port()
        gateway = (
            DockerContainer(IMAGE)
            .with_command("gateway")
            .with_env("CONVMETRICS_BOOTSTRAP_SERVERS", bootstrap)
            .with_env("CONVMETRICS_HOST", "127.0.0.1")
            .with_env("CONVMETRICS_PORT", str(port))
            .with_kwargs(network_mode="host")  # it reaches 127.0.0.1 as the host does
        )
        with gateway:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, gateway.get_logs()
                time.sleep(0.3)
            webhook = dict(next(iter(generate_webhooks(GenerateConfig(seed=1, events=10)))))
            r = httpx.post(f"{url}/webhooks", json=webhook, timeout=30)
            assert r.status_code == 202, r.text
            assert r.json()["topic"] == "conversation-events"
