"""Kafka client settings reach the real clients, and every command refuses bad ones at start
with one line that names the key and never shows a secret."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from support.pipeline import ConsumerProcess

SECRET = "hunter2-s3cret"


def member_client_ids(bootstrap: str, group: str, timeout: float = 60) -> list[str]:
    """The client ids of a consumer group's members, once it has any (bounded wait)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (described,) = admin.describe_consumer_groups([group], request_timeout=10).values()
        try:
            members = described.result(timeout=10).members
        except KafkaException:  # the group's coordinator is still loading: ask again
            members = []
        if members:
            return sorted(m.client_id for m in members)
        time.sleep(0.5)
    raise AssertionError(f"group {group} never had a member")


def test_the_consumer_takes_settings_from_a_properties_file_and_flags(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The broker sees the client id a flag gave, over the file's (flags win); the file's
    other settings are taken too (a consumer with a bad one would not have started)."""
    topic = new_topic(partitions=2)
    config = tmp_path / "client.properties"
    config.write_text("# as kept for the Kafka tools\nclient.id=from-file\nsocket.keepalive.enable: true\n")
    group = f"settings-{topic}"
    proc = ConsumerProcess(
        kafka_bootstrap,
        topic,
        tmp_path / "m.db",
        tmp_path / "consumer.log",
        group=group,
        extra=["--kafka-config", str(config), "--kafka", "client.id=from-flag"],
    )
    try:
        assert member_client_ids(kafka_bootstrap, group) == ["from-flag"]
    finally:
        proc.stop(timeout=20)


@pytest.mark.parametrize(
    ("command", "setting", "named"),
    [
        (["gateway", "--port", "0"], f'sasl.jaas.config=x required password="{SECRET}";', "sasl.jaas.config"),
        (["produce", "-"], "enable.idempotence=false", "enable.idempotence"),
        (["consume", "--bootstrap-servers", "127.0.0.1:1"], "enable.auto.commit=true", "enable.auto.commit"),
        (
            ["dlq", "replay", "--bootstrap-servers", "127.0.0.1:1"],
            "ssl.truststore.location=/x.jks",
            "ssl.ca.location",
        ),
        (["consume", "--bootstrap-servers", "127.0.0.1:1"], "no.such.thing=1", "no.such.thing"),
    ],
)
def test_every_command_refuses_a_bad_setting_at_start(
    tmp_path: Path, command: list[str], setting: str, named: str
) -> None:
    config = tmp_path / "client.properties"
    config.write_text(f"sasl.password={SECRET}\n{setting}\n")
    run = subprocess.run(
        [sys.executable, "-m", "convmetrics", *command, "--kafka-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    assert named in out and "Traceback" not in out and SECRET not in out, out
