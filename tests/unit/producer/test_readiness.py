"""When the gateway starts serving: after the topic's key is checked, with or without
`--no-create-topic` (Kafka faked: the order of the steps is what is tested here; the check
itself runs against a real broker in tests/integration/test_key_check.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from producer import app
from producer.exceptions import KeyMismatchError
from producer.settings import GatewaySettings


@pytest.mark.parametrize("create_topic", [True, False])
def test_the_gateway_serves_only_once_the_topics_key_is_checked(
    monkeypatch: pytest.MonkeyPatch, create_topic: bool
) -> None:
    gw = app.Gateway(GatewaySettings(bootstrap_servers="127.0.0.1:9092", create_topic=create_topic))
    seen: list[tuple[str, bool]] = []
    keyed_otherwise = KeyMismatchError("topic t holds events keyed by conversation", found="conversation")
    answers: list[Exception | None] = [keyed_otherwise, None]

    def check(*_: Any, **__: Any) -> None:
        seen.append(("check", gw.prepared))
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    monkeypatch.setattr(app, "ensure_topic", lambda *_, **__: seen.append(("ensure", gw.prepared)))
    monkeypatch.setattr(app, "check_key", check)
    monkeypatch.setattr(app, "publish_schemas", lambda *_, **__: seen.append(("schemas", gw.prepared)))
    assert not gw.prepared and gw.refused is None
    asyncio.run(gw._prepare(first_wait=0, longest_wait=0))
    # someone else's topic (--no-create-topic) is served while the schemas go out, not before
    # its key is checked; a topic the gateway makes, once everything is done
    made = [("ensure", False)] if create_topic else []
    assert seen == [*made, ("check", False), *made, ("check", False), ("schemas", not create_topic)]
    assert gw.prepared and gw.refused is None


def test_each_cause_of_not_ready_is_logged_once_and_its_retries_at_debug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that stays away for many retries is one line, a new cause another, the
    cause of before again a third; then ready."""
    from producer.exceptions import GatewayError

    gw = app.Gateway(GatewaySettings(bootstrap_servers="127.0.0.1:9092"))
    causes = ["broker away"] * 5 + ["topic not allowed"] * 3 + ["broker away"] * 2 + [None]

    def ensure(*_: Any, **__: Any) -> None:
        cause = causes.pop(0)
        if cause is not None:
            raise GatewayError(cause)

    monkeypatch.setattr(app, "ensure_topic", ensure)
    monkeypatch.setattr(app, "check_key", lambda *_, **__: None)
    monkeypatch.setattr(app, "publish_schemas", lambda *_, **__: None)
    with caplog.at_level("DEBUG", logger=app.log.name):
        asyncio.run(gw._prepare(first_wait=0, longest_wait=0))
    said = [
        (r.levelname, r.getMessage().split(";")[0]) for r in caplog.records if "not ready" in r.getMessage()
    ]
    errors = [m for level, m in said if level == "ERROR"]
    assert errors == [
        "gateway not ready: broker away",
        "gateway not ready: topic not allowed",
        "gateway not ready: broker away",
    ]
    assert len(said) == 10 and gw.prepared  # every retry still in the DEBUG log


class _Failed:
    """A publisher after librdkafka's fatal error (every submit is a 503 from then on)."""

    fatal = "Broker: Producer attempted an operation with an old epoch"
    errors = None

    def broker_reachable(self) -> bool:
        return True


def test_a_producer_failed_for_good_fails_both_probes() -> None:
    """Not ready and not alive: a liveness probe restarts the gateway (a new producer),
    which would otherwise stay in the load balancer answering 503 to every webhook."""
    import json

    gw = app.Gateway(GatewaySettings(bootstrap_servers="127.0.0.1:9092"), publisher=_Failed())  # type: ignore[arg-type]
    gw.prepared = True
    for probe in (gw.healthz, gw.readyz):
        r = asyncio.run(probe(None))  # type: ignore[arg-type]
        assert r.status_code == 503, probe
        assert (
            "failed fatally (Broker: Producer attempted an operation with an old epoch): restart"
            in (json.loads(bytes(r.body))["detail"])
        )
    gw.publisher.fatal = None  # type: ignore[union-attr]
    assert asyncio.run(gw.healthz(None)).status_code == 200  # type: ignore[arg-type]
    assert asyncio.run(gw.readyz(None)).status_code == 200  # type: ignore[arg-type]


def test_a_schema_topic_the_acls_deny_leaves_the_gateway_serving_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from schemas.exceptions import TopicNotMadeError

    gw = app.Gateway(GatewaySettings(bootstrap_servers="127.0.0.1:9092"))
    tries = [
        TopicNotMadeError("cannot create the schema topic _convmetrics-schemas: TOPIC_AUTHORIZATION_FAILED")
    ] * 3

    serving: list[bool] = []

    def publish(*_: Any, **__: Any) -> None:
        serving.append(gw.prepared)
        if tries:
            raise tries.pop()

    monkeypatch.setattr(app, "ensure_topic", lambda *_, **__: None)
    monkeypatch.setattr(app, "check_key", lambda *_, **__: None)
    monkeypatch.setattr(app, "publish_schemas", publish)
    with caplog.at_level("WARNING", logger=app.log.name):
        asyncio.run(gw._prepare(first_wait=0, longest_wait=0))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith(
        "schemas not published yet: cannot create the schema topic"
    )
    assert serving == [False, True, True, True] and gw.prepared and not tries  # served from the refusal on
