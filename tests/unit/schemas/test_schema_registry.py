"""`schemas push`'s verdict on what a registry holds (pure), and the registry settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import subject
from schemas.exceptions import RegistryError
from schemas.registry import load_pins
from schemas.schema_registry import mismatches, registry_settings

EVENTS = subject("conversation_event")
PINS = load_pins()
V1, V2 = (v.raw for v in EVENTS.versions)
NAME = "conversation-events-value"


def test_a_registry_holding_our_versions_in_order_is_fine() -> None:
    assert mismatches(NAME, EVENTS, PINS, []) == []
    assert mismatches(NAME, EVENTS, PINS, [(1, V1)]) == []
    assert mismatches(NAME, EVENTS, PINS, [(1, V1), (2, V2)], complete=True) == []


def test_a_missing_version_counts_only_once_complete() -> None:
    (problem,) = mismatches(NAME, EVENTS, PINS, [(1, V1)], complete=True)
    assert problem.startswith(f"registry subject {NAME} lacks conversation_event v2")


def test_a_foreign_schema_under_our_subject_is_named() -> None:
    other = {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [{"name": "id", "type": "long"}],
    }
    (problem,) = mismatches(NAME, EVENTS, PINS, [(1, V1), (2, other)])
    assert f"registry subject {NAME} version 2 holds shop.Order" in problem
    assert "not a version of conversation_event in this repo" in problem


def test_a_changed_version_is_caught_by_its_pin_not_its_file() -> None:
    changed = dict(V2, fields=V2["fields"][1:])  # same name, one field less: another fingerprint
    (problem,) = mismatches(NAME, EVENTS, PINS, [(1, V1), (2, changed)])
    assert "version 2 holds io.convmetrics.events.ConversationEvent with fingerprint" in problem
    wrong_pins = {**PINS, "conversation_event/v2": "0" * 16}
    assert any("version 2" in p for p in mismatches(NAME, EVENTS, wrong_pins, [(1, V1), (2, V2)]))


def test_versions_out_of_order_are_refused() -> None:
    (problem,) = mismatches(NAME, EVENTS, PINS, [(1, V2), (2, V1)])
    assert "out of order" in problem


def test_a_version_registered_twice_is_refused() -> None:
    """Another text of one version (a doc changed) is the same fingerprint, and a registry
    keeps it as a version of its own: writers of either build then use different ids."""
    redoc = dict(V1, doc="another text of v1")
    (problem,) = mismatches(NAME, EVENTS, PINS, [(1, V1), (2, redoc), (3, V2)])
    assert problem == (
        f"registry subject {NAME} version 2 holds conversation_event v1 again, "
        "registered from another text of it"
    )


def test_settings_come_from_the_flag_or_the_environment() -> None:
    assert registry_settings(None, {}) is None
    s = registry_settings(None, {"CONVMETRICS_SCHEMA_REGISTRY_URL": "https://r:8081/",
                                 "CONVMETRICS_SCHEMA_REGISTRY_USER_INFO": "u:secret",
                                 "CONVMETRICS_SCHEMA_REGISTRY_CA": "/ca.pem"})  # fmt: skip
    assert s is not None and s.url == "https://r:8081"
    conf = s.client_config()
    assert conf["basic.auth.user.info"] == "u:secret" and conf["ssl.ca.location"] == "/ca.pem"
    assert "secret" not in repr(s)
    flag = registry_settings("http://flag:1", {"CONVMETRICS_SCHEMA_REGISTRY_URL": "http://env:2"})
    assert flag is not None and flag.url == "http://flag:1"
    with pytest.raises(RegistryError, match="use http"):
        registry_settings("registry:8081", {})


def test_tls_trusts_the_system_cas_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CONVMETRICS_SCHEMA_REGISTRY_CA: the system store (an internal CA added to it is
    trusted), not the client's own default (certifi's bundle); SSL_CERT_FILE / SSL_CERT_DIR
    are left to the client, which reads them."""
    import ssl

    url = {"CONVMETRICS_SCHEMA_REGISTRY_URL": "https://r:8081"}
    bundle, folder = tmp_path / "ca-certificates.crt", tmp_path / "certs"
    bundle.write_text("")
    folder.mkdir()

    def paths(cafile: Path | None) -> ssl.DefaultVerifyPaths:
        return ssl.DefaultVerifyPaths(str(cafile) if cafile else None, str(folder), "", "", "", "")  # type: ignore[call-arg]

    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths(bundle))
    assert registry_settings(None, url).client_config()["ssl.ca.location"] == str(bundle)  # type: ignore[union-attr]
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths(None))  # a store of hashed files only
    assert registry_settings(None, url).client_config()["ssl.ca.location"] == str(folder)  # type: ignore[union-attr]
    for told in (
        {"CONVMETRICS_SCHEMA_REGISTRY_CA": "/ca.pem"},
        {"SSL_CERT_FILE": "/x.pem"},
        {"SSL_CERT_DIR": "/d"},
    ):
        conf = registry_settings(None, {**url, **told}).client_config()  # type: ignore[union-attr]
        assert conf.get("ssl.ca.location") == told.get("CONVMETRICS_SCHEMA_REGISTRY_CA"), told
    with pytest.raises(RegistryError, match="USER:PASSWORD"):
        registry_settings("http://r", {"CONVMETRICS_SCHEMA_REGISTRY_USER_INFO": "nocolon"})


def test_push_takes_the_events_topic_from_convmetrics_topic_as_the_writers_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment that names its events topic in CONVMETRICS_TOPIC pushes that topic's
    subject (the gateway would otherwise refuse to start: "not pushed")."""
    from convmetrics.cli import build_parser

    monkeypatch.delenv("CONVMETRICS_TOPIC", raising=False)
    assert build_parser().parse_args(["schemas", "push"]).topic_conversation_event == "conversation-events"
    monkeypatch.setenv("CONVMETRICS_TOPIC", "acme-events")
    args = build_parser().parse_args(["schemas", "push"])
    assert args.topic_conversation_event == "acme-events"
    assert args.topic_metric_rows == "conversation-metric-rows"  # no variable for the others
    flag = build_parser().parse_args(["schemas", "push", "--events-topic", "given"])
    assert flag.topic_conversation_event == "given"
