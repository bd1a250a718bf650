"""JSON-array and NDJSON batch bodies; settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.backfill import count_lines, read_items
from producer.batch import parse_batch
from producer.exceptions import MalformedJSONError, SettingsError
from producer.settings import GatewaySettings, load_settings


def test_json_array_items_keep_their_positions() -> None:
    items = parse_batch(b'  [{"a":1}, 2, "x"]')
    assert [(i.index, i.body) for i in items] == [(0, {"a": 1}), (1, 2), (2, "x")]


def test_ndjson_bad_line_costs_only_that_item() -> None:
    items = parse_batch(b'{"a":1}\n\n{bad\r\n{"b":2}\n')
    assert [(i.index, i.line, i.body) for i in items] == [(0, 1, {"a": 1}), (1, 3, None), (2, 4, {"b": 2})]
    assert isinstance(items[1].error, MalformedJSONError)


def test_truncated_json_array_is_malformed_as_a_whole() -> None:
    with pytest.raises(MalformedJSONError):
        parse_batch(b'[{"a":1},')


def test_empty_body_is_an_empty_batch() -> None:
    assert parse_batch(b"") == []


def test_file_reader_handles_both_formats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    nd = tmp_path / "x.ndjson"
    nd.write_bytes(b'{"a":1}\n' + b'{"b":"' + b"y" * 100 + b'"}\n\n{"c":3}\n')
    assert [i.body for i in read_items(nd)] == [{"a": 1}, {"b": "y" * 100}, {"c": 3}]
    assert count_lines(nd) == 3
    arr = tmp_path / "x.json"
    arr.write_bytes(b'\n [{"a":1},{"b":2}]')
    assert [i.body for i in read_items(arr)] == [{"a": 1}, {"b": 2}]
    assert count_lines(arr) is None


def test_settings_from_environment_with_comma_separated_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVMETRICS_WEBHOOK_SECRETS", "whsec_c2VjcmV0MQ==, whsec_c2VjcmV0Mg==")
    monkeypatch.setenv("CONVMETRICS_TOPIC", "t1")
    monkeypatch.setenv("CONVMETRICS_DELIVERY_TIMEOUT", "2.5")
    s = load_settings(bootstrap_servers="k:9092", port=9999, topic=None)
    assert s.topic == "t1" and s.port == 9999 and s.delivery_timeout == 2.5
    assert s.signing_keys() == [b"secret1", b"secret2"]
    assert "secret1" not in repr(s)
    config = s.producer_config()
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["message.timeout.ms"] == 2500
    with pytest.raises(Exception):  # noqa: B017 - frozen
        s.port = 1  # type: ignore[misc]


def test_kafka_is_required_as_for_consume_and_the_refusal_shows_no_other_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVMETRICS_BOOTSTRAP_SERVERS", raising=False)
    flags = {"bootstrap_servers": "--bootstrap-servers"}
    with pytest.raises(SettingsError) as err:
        load_settings(flags=flags, webhook_secrets="whsec_c2VjcmV0MQ==", kafka={"sasl.password": "S3cret"})
    assert str(err.value) == (
        "invalid settings: --bootstrap-servers (or CONVMETRICS_BOOTSTRAP_SERVERS): required "
        "(`convmetrics broker` starts a local Kafka)"
    )
    monkeypatch.setenv("CONVMETRICS_BOOTSTRAP_SERVERS", "k:9092")
    assert load_settings(flags=flags).bootstrap_servers == "k:9092"


def test_defaults_match_the_issue() -> None:
    s = GatewaySettings(bootstrap_servers="k:9092")
    assert (s.topic, s.max_body_bytes, s.partitions) == ("conversation-events", 1024 * 1024, 6)


def test_invalid_setting_names_the_setting() -> None:
    """As the user gives it: the flag and the variable, and the value refused (never a secret's)."""
    flags = {"max_body_bytes": "--max-body-bytes", "webhook_secrets": "--webhook-secrets"}
    with pytest.raises(
        SettingsError, match=r"--max-body-bytes \(or CONVMETRICS_MAX_BODY_BYTES\): .*, got 0$"
    ):
        load_settings(bootstrap_servers="k:9092", flags=flags, max_body_bytes=0)
    # a setting the command has no flag for (produce has no --port): the variable alone
    with pytest.raises(SettingsError, match=r"settings: CONVMETRICS_PORT: .*, got 'tcp://10.0.0.1:8080'$"):
        load_settings(bootstrap_servers="k:9092", flags=flags, port="tcp://10.0.0.1:8080")
    with pytest.raises(SettingsError, match=r"--webhook-secrets \(or CONVMETRICS_WEBHOOK_SECRETS\)") as err:
        load_settings(bootstrap_servers="k:9092", flags=flags, webhook_secrets="whsec_S3cret!,")
    assert "S3cret" not in str(err.value)


def test_a_users_tuning_wins_and_the_gateways_own_settings_are_refused() -> None:
    """`--kafka compression.type=zstd linger.ms=100` take effect (they were accepted, then
    silently replaced by the gateway's defaults); the delivery timeout is the gateway's own
    (its 503), so librdkafka's key for it is refused naming the flag; an unknown codec is
    refused when the settings load, not by librdkafka at start."""
    kafka = {"compression.type": "zstd", "linger.ms": "100"}
    config = load_settings(bootstrap_servers="k:9092", kafka=kafka, delivery_timeout=3).producer_config()
    assert (config["compression.type"], config["linger.ms"]) == ("zstd", "100")
    assert (config["acks"], config["message.timeout.ms"]) == ("all", 3000)
    assert (
        load_settings(bootstrap_servers="k:9092").producer_config()["compression.type"] == "lz4"
    )  # the default
    with pytest.raises(SettingsError, match=r"message\.timeout\.ms is set by --delivery-timeout"):
        load_settings(bootstrap_servers="k:9092", kafka={"message.timeout.ms": "120000"})
    with pytest.raises(SettingsError, match=r"CONVMETRICS_COMPRESSION: .*, got 'zstdx'"):
        load_settings(bootstrap_servers="k:9092", compression="zstdx")


def test_produce_ignores_the_gateways_http_settings_and_the_gateway_names_its_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kubernetes sets CONVMETRICS_PORT=tcp://10.0.0.1:8080 for a Service named convmetrics:
    produce serves no HTTP and reads no port; the gateway refuses it naming flag and variable."""
    from convmetrics.cli import build_parser
    from producer import cli

    monkeypatch.setenv("CONVMETRICS_PORT", "tcp://10.0.0.1:8080")
    monkeypatch.setenv("CONVMETRICS_BOOTSTRAP_SERVERS", "k:9092")
    produce = build_parser().parse_args(["produce", "events.ndjson"])
    assert cli._settings(produce, cli._COMMON).port == 8080
    gateway = build_parser().parse_args(["gateway"])
    with pytest.raises(SettingsError, match=r"--port \(or CONVMETRICS_PORT\): .*, got 'tcp://10.0.0.1:8080'"):
        cli._settings(gateway, (*cli._COMMON, *cli._GATEWAY))


def test_webhook_secrets_from_a_file_and_its_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mounted Secret: one a line (or comma- or space-separated), `#` comments; refused
    beside the secrets given otherwise, unreadable, empty or with a bad secret, naming the
    file (and the secret's place), never a secret."""
    monkeypatch.delenv("CONVMETRICS_WEBHOOK_SECRETS", raising=False)
    monkeypatch.delenv("CONVMETRICS_WEBHOOK_SECRETS_FILE", raising=False)
    path = tmp_path / "secrets"
    path.write_text("# rotated in\nwhsec_c2VjcmV0MQ==\nwhsec_c2VjcmV0Mg==, # the old one\n")
    kafka = {"bootstrap_servers": "k:9092"}
    assert load_settings(**kafka, webhook_secrets_file=str(path)).signing_keys() == [b"secret1", b"secret2"]
    monkeypatch.setenv("CONVMETRICS_WEBHOOK_SECRETS_FILE", str(path))
    assert load_settings(**kafka).signing_keys() == [b"secret1", b"secret2"]
    assert load_settings(**kafka, webhook_secrets_file="").signing_keys() == []  # produce: not read
    monkeypatch.delenv("CONVMETRICS_WEBHOOK_SECRETS_FILE")
    flags = {"webhook_secrets_file": "--webhook-secrets-file"}
    named = f"--webhook-secrets-file (or CONVMETRICS_WEBHOOK_SECRETS_FILE) {path}"
    bad = tmp_path / "bad"
    bad.write_text("whsec_c2VjcmV0MQ==\nwhsec_S3cret!\n")
    empty = tmp_path / "empty"
    empty.write_text("# none yet\n")
    for given, says in (
        (
            {"webhook_secrets_file": str(path), "webhook_secrets": "whsec_c2VjcmV0MQ=="},
            f"{named}: give the secrets or a file",
        ),
        ({"webhook_secrets_file": str(tmp_path / "none")}, "cannot read it: No such file or directory"),
        ({"webhook_secrets_file": str(empty)}, f"{empty}: holds no secret"),
        ({"webhook_secrets_file": str(bad)}, f"{bad}: secret 2: a webhook secret is not base64"),
    ):
        with pytest.raises(SettingsError) as err:
            load_settings(**kafka, flags=flags, **given)
        assert says in str(err.value) and "S3cret" not in str(err.value), str(err.value)
