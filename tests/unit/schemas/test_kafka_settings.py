"""Kafka client settings (`schemas.kafka`): where they come from, in which order, what is
refused and why, and that secrets stay out of every message."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from schemas import kafka
from schemas.kafka import (
    KAFKA_LOG,
    KafkaSettingsError,
    OncePerMinute,
    Settling,
    client_config,
    load,
    redacted,
)

SECRET = "hunter2-s3cret"


def props(tmp_path: Path, text: str) -> str:
    path = tmp_path / "client.properties"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_flags_override_the_file_which_overrides_the_environment(tmp_path: Path) -> None:
    env = {
        "CONVMETRICS_KAFKA_CLIENT_ID": "from-env",
        "CONVMETRICS_KAFKA_SOCKET_TIMEOUT_MS": "11000",
        "CONVMETRICS_KAFKA_SESSION_TIMEOUT_MS": "12000",
        "CONVMETRICS_BOOTSTRAP_SERVERS": "not-a-kafka-setting:9092",  # another prefix: not read
    }
    path = props(tmp_path, "client.id=from-file\nsocket.timeout.ms: 21000\n")
    got = load(["client.id=from-flag"], path, env)
    assert dict(got) == {
        "client.id": "from-flag",
        "socket.timeout.ms": "21000",
        "session.timeout.ms": "12000",
    }
    assert dict(load([], None, {**env, "CONVMETRICS_KAFKA_CONFIG": path}))["client.id"] == "from-file"
    assert dict(load([], None, {})) == {}


def test_variables_that_are_not_settings_are_left_alone() -> None:
    """Under the prefix but no librdkafka setting: the Kafka image of the tests and compose,
    and what Kubernetes injects for a Service named convmetrics-kafka. A refusal of them
    stopped every command before it started."""
    env = {
        "CONVMETRICS_KAFKA_IMAGE": "apache/kafka:4.1.1",
        "CONVMETRICS_KAFKA_PORT": "tcp://10.96.0.12:9092",
        "CONVMETRICS_KAFKA_PORT_9092_TCP_ADDR": "10.96.0.12",
        "CONVMETRICS_KAFKA_SERVICE_HOST": "10.96.0.12",
        "CONVMETRICS_KAFKA_SERVICE_PORT": "9092",
        # a Service named convmetrics-kafka-bootstrap (Strimzi's, for a cluster "convmetrics")
        "CONVMETRICS_KAFKA_BOOTSTRAP_SERVICE_HOST": "10.96.0.13",
        "CONVMETRICS_KAFKA_BOOTSTRAP_SERVICE_PORT": "9092",
        "CONVMETRICS_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_REPLICATION": "9091",
        "CONVMETRICS_KAFKA_BOOTSTRAP_PORT": "tcp://10.96.0.13:9092",
        "CONVMETRICS_KAFKA_BOOTSTRAP_PORT_9092_TCP": "tcp://10.96.0.13:9092",
        "CONVMETRICS_KAFKA_BOOTSTRAP_PORT_9092_TCP_PROTO": "tcp",
        "CONVMETRICS_KAFKA_CLIENT_ID": "kept",
    }
    assert dict(load([], None, env)) == {"client.id": "kept"}
    with pytest.raises(KafkaSettingsError, match="portal"):  # a near name is still judged
        load([], None, {"CONVMETRICS_KAFKA_PORTAL": "x"})
    with pytest.raises(KafkaSettingsError, match=r"bootstrap\.servicex"):
        load([], None, {"CONVMETRICS_KAFKA_BOOTSTRAP_SERVICEX": "x"})


def test_the_file_is_java_properties(tmp_path: Path) -> None:
    path = props(
        tmp_path,
        "# a comment\n! another\nsecurity.protocol = SASL_SSL\nsasl.mechanism:SCRAM-SHA-512\n"
        "sasl.username=svc-\\\n    metrics\n\nsasl.password=" + SECRET + "\n",
    )
    got = load([], path, {})
    assert dict(got) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-metrics",  # a continued line
        "sasl.password": SECRET,
    }
    assert SECRET not in repr(got) and "sasl.password" in repr(got)


@pytest.mark.parametrize(
    ("where", "key", "value", "says"),
    [
        (
            "file",
            "sasl.jaas.config",
            f'org.apache...ScramLoginModule required password="{SECRET}";',
            "sasl.username",
        ),
        ("env", "ssl.truststore.location", "/etc/kafka/truststore.jks", "ssl.ca.location"),
        ("flag", "ssl.truststore.password", SECRET, "ssl.ca.location"),
        ("flag", "acks", "1", "acks=all"),
        ("file", "enable.idempotence", "false", "idempotent"),
        ("env", "enable.auto.commit", "true", "offsets in the store"),
        ("flag", "bootstrap.servers", "elsewhere:9092", "--bootstrap-servers"),
        ("flag", "group.id", "other", "--group"),
        ("flag", "no.such.setting", "1", "No such configuration property"),
        ("file", "security.protocol", "SASL_PLAINTEXTISH", "Invalid value"),
    ],
)
def test_refused_keys_are_named_with_their_source_and_no_secret(
    tmp_path: Path, where: str, key: str, value: str, says: str
) -> None:
    flags, path, env = [], None, {}
    if where == "flag":
        flags = [f"{key}={value}"]
    elif where == "file":
        path = props(tmp_path, f"{key}={value}\n")
    else:
        env = {"CONVMETRICS_KAFKA_" + key.upper().replace(".", "_"): value}
    with pytest.raises(KafkaSettingsError) as err:
        load(flags, path, {**env, "CONVMETRICS_KAFKA_SASL_PASSWORD": SECRET})
    message = str(err.value)
    assert key in message and says in message
    assert {"flag": "--kafka", "file": "--kafka-config", "env": "environment"}[where] in message
    assert SECRET not in message


def test_librdkafka_judges_values_and_a_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(KafkaSettingsError) as err:
        load(
            ["security.protocol=SSL", "ssl.ca.location=/nonexistent/ca.pem", f"ssl.key.password={SECRET}"],
            None,
            {},
        )
    assert "ssl.ca.location" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(KafkaSettingsError) as err:
        load([f"sasl.password{SECRET}"], None, {})  # no '=': the text may be a secret
    assert "KEY=VALUE" in str(err.value) and SECRET not in str(err.value)


def test_a_refusal_names_the_setting_by_its_value_or_else_all_and_masks_whole_words() -> None:
    """librdkafka's message may name no key: the setting whose value it quotes is named,
    else every setting given; a secret is masked where it stands as a word, not inside
    others (a password "p" turned "producer" into "***roducer")."""
    with pytest.raises(KafkaSettingsError) as err:
        load(["security.protocol=SASL_PLAINTEXT", "sasl.username=u", "sasl.password=p"],
             None, {"CONVMETRICS_KAFKA_SASL_MECHANISM": "BOGUS"})  # fmt: skip
    assert str(err.value) == (
        "librdkafka refuses sasl.mechanism (environment): Failed to create producer: "
        "Unsupported SASL mechanism: BOGUS"
    )
    with pytest.raises(KafkaSettingsError) as err:
        load(["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN"], None, {})
    assert str(err.value).startswith(
        "librdkafka refuses the Kafka settings (security.protocol (--kafka), sasl.mechanism (--kafka)): "
    )


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KafkaSettingsError, match=r"--kafka-config .*missing\.properties: cannot read"):
        load([], str(tmp_path / "missing.properties"), {})


def test_a_clients_own_settings_win_over_the_users() -> None:
    config = client_config("k:9092", {"client.id": "x", "linger.ms": "100"}, acks="all", linger_ms=5)
    assert config == {
        "logger": KAFKA_LOG,
        "bootstrap.servers": "k:9092",
        "client.id": "x",
        "linger.ms": 5,
        "acks": "all",
    }
    # tuning defaults are the other way round: the user's value wins, the default fills in
    tuned = client_config("k:9092", {"linger.ms": "100"}, tuning={"linger_ms": 5, "compression_type": "lz4"})
    assert tuned == {
        "logger": KAFKA_LOG,
        "bootstrap.servers": "k:9092",
        "linger.ms": "100",
        "compression.type": "lz4",
    }
    assert redacted(
        {"sasl.password": "p", "ssl.key.pem": "k", "sasl.oauthbearer.client.secret": "s", "a": 1}
    ) == {
        "sasl.password": "***",
        "ssl.key.pem": "***",
        "sasl.oauthbearer.client.secret": "***",
        "a": 1,
    }


def test_errors_the_settings_cause_name_the_settings_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from confluent_kafka import KafkaError

    from schemas.kafka import ErrorReport

    report = ErrorReport(logging.getLogger("test.kafka"), every=60)
    auth = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    with caplog.at_level(logging.WARNING, "test.kafka"):
        for _ in range(5):  # librdkafka reports every failed reconnect
            report(auth)
        report(KafkaError(KafkaError._TRANSPORT, "connection refused"))
        report(KafkaError(KafkaError._SSL, "certificate verify failed"))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 3
    assert lines[0][0] == "ERROR" and "sasl.username, sasl.password and sasl.mechanism" in lines[0][1]
    assert lines[1] == ("WARNING", "Kafka: connection refused")
    assert lines[2][0] == "ERROR" and "ssl.ca.location" in lines[2][1]
    assert report.last is not None and "TLS" in report.last


@pytest.mark.parametrize("doc", ["docs/deployment.md", "docs/operations.md"])
def test_the_docs_properties_examples_are_accepted(tmp_path: Path, doc: str) -> None:
    """What the docs show is what `--kafka-config` takes (the CA file aside: not on every machine)."""
    import re

    text = (Path(__file__).resolve().parents[3] / doc).read_text()
    blocks = re.findall(r"```properties\n(.*?)```", text, re.S)
    assert blocks, doc
    for block in blocks:
        path = props(
            tmp_path, "\n".join(line for line in block.splitlines() if "ssl.ca.location" not in line)
        )
        assert load([], path, {})["security.protocol"] == "SASL_SSL"


class _StuckConsumer:
    """A consumer whose close waits for its coordinator until released (librdkafka #3740)."""

    def __init__(self, stuck: bool) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()
        if not stuck:
            self.release.set()

    def close(self) -> None:
        self.release.wait()
        self.closed.set()


def test_a_close_that_never_ends_does_not_hold_the_process(caplog: pytest.LogCaptureFixture) -> None:
    stuck = _StuckConsumer(stuck=True)
    try:
        assert kafka.close_consumer(stuck, timeout=0.2) is False  # type: ignore[arg-type]
        assert "did not leave its group within 0.2 s" in caplog.text
    finally:
        stuck.release.set()
    assert stuck.closed.wait(5)


def test_a_close_that_ends_is_waited_for() -> None:
    fine = _StuckConsumer(stuck=False)
    assert kafka.close_consumer(fine, timeout=5) is True  # type: ignore[arg-type]
    assert fine.closed.is_set()


def test_an_unreachable_cluster_is_said_with_librdkafkas_reason_not_a_repr() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from schemas.kafka import unreachable

    reason = "Failed to get metadata: Local: Broker transport failure"
    exc = KafkaException(KafkaError(KafkaError._TRANSPORT, reason))
    assert unreachable("h:1", 10, exc) == f"Kafka at h:1 did not answer within 10 s: {reason}"
    plain = unreachable("h:1", 2.5, KafkaException("plain"))
    assert plain == "Kafka at h:1 did not answer within 2.5 s: plain"


def test_librdkafkas_lines_go_through_logging_once_a_minute_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client `client_config` makes logs through `KAFKA_LOG` (not raw `%3|...` lines on
    stderr), whose filter lets a line through once a minute, its numbers ignored."""
    assert client_config("k:9092", {})["logger"] is KAFKA_LOG
    assert any(isinstance(f, OncePerMinute) for f in KAFKA_LOG.filters)
    now = [1000.0]
    monkeypatch.setattr("schemas.kafka.time.monotonic", lambda: now[0])
    once = OncePerMinute()

    def passes(text: str) -> bool:
        return once.filter(logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, text, None, None))

    assert passes("FAIL Connect to k:1 failed (after 0ms in state CONNECT)")
    assert not passes("FAIL Connect to k:1 failed (after 313ms in state CONNECT)")  # the same line
    assert passes("FAIL SASL authentication error")  # another line
    now[0] += 59.999
    assert not passes("FAIL Connect to k:2 failed (after 5ms in state CONNECT)")
    now[0] += 0.001  # a minute after it first went through
    assert passes("FAIL Connect to k:2 failed (after 5ms in state CONNECT)")


def test_a_coordinator_still_loading_is_info_not_a_warning() -> None:
    """librdkafka retries it by itself on a cluster just started: said at INFO (dropped where
    INFO is off), not as a WARNING that reads as a failure; other warnings stay warnings."""
    assert any(isinstance(f, Settling) for f in KAFKA_LOG.filters)
    once = Settling()
    line = (
        "GETPID [rdkafka#producer-8] [thrd:main]: Failed to acquire idempotence PID from broker "
        "127.0.0.1:33087/1: Broker: Coordinator load in progress: retrying"
    )
    record = logging.LogRecord("librdkafka", logging.WARNING, __file__, 1, line, None, None)
    before = KAFKA_LOG.level
    try:
        KAFKA_LOG.setLevel(logging.INFO)  # setLevel: the logger's enabled cache is cleared
        assert once.filter(record) and (record.levelno, record.levelname) == (logging.INFO, "INFO")
        KAFKA_LOG.setLevel(logging.WARNING)
        quiet = logging.LogRecord(
            "librdkafka", logging.WARNING, __file__, 1, line.replace("8", "9"), None, None
        )
        assert not once.filter(quiet)
    finally:
        KAFKA_LOG.setLevel(before)
    other = logging.LogRecord("librdkafka", logging.WARNING, __file__, 1, "REQTMOUT Timed out", None, None)
    assert once.filter(other) and other.levelno == logging.WARNING
