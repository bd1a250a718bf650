"""Webhook JSON -> Avro record: the seed, both time-field names, open channel types, extras."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from producer.exceptions import SettingsError, WebhookValidationError
from producer.intake import Ignored, Intake, Prepared, prepare
from producer.mapping import CONVERSATION_EVENTS, event_key, is_conversation_event, to_record
from producer.models import MAX_EVENT_TIME, Webhook
from producer.settings import GatewaySettings
from schemas import conversation_codec
from schemas.event_time import MAX_AHEAD_S

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SEED: dict[str, Any] = json.loads((FIXTURES / "seed_conversation_closed.json").read_text())
#: the seed as the v1 golden record, plus v2's receive time (None when not given)
EXPECTED: dict[str, Any] = {
    **json.loads((FIXTURES / "conversation_event" / "v1.json").read_text()),
    "receivedAtMillis": None,
}
CODEC = conversation_codec()


def seed() -> dict[str, Any]:
    return copy.deepcopy(SEED)


def as_json(value: Any) -> Any:
    """Tuples (union branches) compare equal to the JSON fixture's lists."""
    return json.loads(json.dumps(value))


def test_seed_example_maps_to_the_pinned_record() -> None:
    record = to_record(Webhook.model_validate(seed()))
    assert as_json(record) == EXPECTED


def test_seed_example_encodes_and_decodes_to_the_same_record() -> None:
    prepared = prepare(seed(), CODEC)
    assert isinstance(prepared, Prepared)
    assert as_json(CODEC.decode(prepared.value)) == EXPECTED
    assert prepared.key == b"1"
    assert ("convmetrics-event-type", b"conversation.closed") in prepared.headers


def test_receive_time_is_recorded() -> None:
    prepared = prepare(seed(), CODEC, received_at_millis=1652968659123)
    assert isinstance(prepared, Prepared)
    assert CODEC.decode(prepared.value)["receivedAtMillis"] == 1652968659123


def test_participants_are_tagged_with_full_record_names() -> None:
    users = to_record(Webhook.model_validate(seed()))["data"]["participants"]
    assert [u["user"][0] for u in users] == [
        "io.convmetrics.events.ChannelUser",
        "io.convmetrics.events.AppUser",
    ]


@pytest.mark.parametrize("field", ["closed_at", "assigned_at", "opened_at", "created_at", "snoozed_at"])
def test_envelope_time_named_verb_at_is_accepted(field: str) -> None:
    body = seed()
    body[field] = body.pop("createdAt")
    assert Webhook.model_validate(body).createdAt == 1652968658


def test_own_verb_at_wins_over_other_verb_at() -> None:
    body = seed()
    del body["createdAt"]
    body["event"] = "conversation.assigned"
    body["created_at"] = 1
    body["assigned_at"] = 2
    assert Webhook.model_validate(body).createdAt == 2


def test_created_at_wins_when_both_names_are_present() -> None:
    body = {**seed(), "closed_at": 5}
    assert Webhook.model_validate(body).createdAt == 1652968658


def test_missing_envelope_time_is_a_422_naming_created_at() -> None:
    body = seed()
    del body["createdAt"]
    with pytest.raises(WebhookValidationError) as err:
        prepare(body, CODEC)
    assert [p.loc for p in err.value.problems] == ["createdAt"]
    assert err.value.status == 422


def with_time(field: str, value: int) -> dict[str, Any]:
    """The seed webhook with one event time set, the field named as the sender would
    (`closed_at`: the envelope time under its verb's name, without `createdAt`)."""
    body = seed()
    if field == "closed_at":
        del body["createdAt"]
    target, name = (body["data"], field[5:]) if field.startswith("data.") else (body, field)
    target[name] = value
    return body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("createdAt", 1_652_968_658_000),  # milliseconds
        ("createdAt", -1),
        ("closed_at", 1_652_968_658_000_000_000),  # nanoseconds, under its snake_case name
        ("data.closedAt", 1_652_968_658_123),
        ("data.openedAt", 2**63 - 1),
        ("data.createdAt", MAX_EVENT_TIME + 1),
    ],
)
def test_an_event_time_that_is_not_unix_seconds_is_a_422(field: str, value: int) -> None:
    with pytest.raises(WebhookValidationError) as err:
        prepare(with_time(field, value), CODEC)
    assert err.value.status == 422
    assert [p.loc for p in err.value.problems] == [field], err.value.problems  # as the sender named it


def test_event_times_from_1970_to_a_day_after_the_gateways_clock_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_800_000_000
    monkeypatch.setattr("producer.intake.time.time", lambda: now + 0.9)
    for t in (0, 1_652_968_658, now + MAX_AHEAD_S):
        body = seed()
        body["createdAt"] = body["data"]["closedAt"] = t
        assert isinstance(prepare(body, CODEC), Prepared)


@pytest.mark.parametrize("field", ["createdAt", "data.closedAt", "data.createdAt", "closed_at"])
def test_an_event_time_more_than_a_day_ahead_is_a_422_naming_it(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """A sender's clock years (or a day and a second) ahead: the consumer would dead-letter
    the event (its time would move the watermark retention counts from); 9999 is still a
    time, but not one any clock sends now."""
    now = 1_800_000_000
    monkeypatch.setattr("producer.intake.time.time", lambda: now)
    for ahead in (now + MAX_AHEAD_S + 1, MAX_EVENT_TIME):
        with pytest.raises(WebhookValidationError) as err:
            prepare(with_time(field, ahead), CODEC)
        assert err.value.status == 422
        (problem,) = err.value.problems
        assert problem.loc == field and "is more than 1 day after this gateway's clock" in problem.msg


@pytest.mark.parametrize("name", ["BRAND_NEW_CHANNEL", "X", "A" + "B" * 62 + "9", "WABA_2", "A_"])
def test_unknown_channel_type_travels_under_its_own_name(name: str) -> None:
    """Any name shaped like the platform's (up to 64 characters) is taken as it is."""
    body = seed()
    body["data"]["channelType"] = name
    prepared = prepare(body, CODEC)
    assert isinstance(prepared, Prepared)
    assert CODEC.decode(prepared.value)["data"]["channelType"] == name


def test_unknown_extra_fields_are_dropped() -> None:
    body = seed()
    body["surprise"] = {"a": 1}
    body["data"]["newField"] = [1, 2]
    body["data"]["participants"][0]["user"]["email"] = "x@example.com"
    body["data"]["participants"][1]["extra"] = True
    assert as_json(to_record(Webhook.model_validate(body))) == EXPECTED


def test_message_window_conditions_become_compact_json_strings() -> None:
    body = seed()
    body["data"]["messageWindowExpiryConditions"] = [{"type": "WINDOW", "hours": 24}, "x", 3]
    record = to_record(Webhook.model_validate(body))
    assert record["data"]["messageWindowExpiryConditions"] == ['{"type":"WINDOW","hours":24}', '"x"', "3"]


def test_data_time_field_in_snake_case_is_accepted() -> None:
    body = seed()
    body["data"]["closed_at"] = body["data"].pop("closedAt")
    assert Webhook.model_validate(body).data.closedAt == 1652783952


def test_nullable_lists_and_channel_may_be_null_or_absent() -> None:
    body = seed()
    body["data"]["messageWindowExpiryConditions"] = None
    body["data"]["participants"] = None
    del body["data"]["channel"]
    data = to_record(Webhook.model_validate(body))["data"]
    assert (
        data["messageWindowExpiryConditions"] == [] and data["participants"] == [] and data["channel"] is None
    )


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda b: b["data"].update(id="1"), "data.id"),
        (lambda b: b.update(account=1.5), "account"),
        (lambda b: b.update(account=True), "account"),
        (lambda b: b.update(account=2**63), "account"),
        (lambda b: b.update(deliveryAttempts=2**31), "deliveryAttempts"),
        (lambda b: b["data"].pop("channelType"), "data.channelType"),
        (lambda b: b["data"].update(channelType=""), "data.channelType"),
        (lambda b: b["data"].update(channelType="A" * 65), "data.channelType"),  # 64 is the most
        (lambda b: b["data"].update(channelType="X" * 10_000), "data.channelType"),
        (lambda b: b["data"].update(channelType="<script>alert(1)</script>"), "data.channelType"),
        (lambda b: b["data"].update(channelType="TELE GRAM"), "data.channelType"),
        (lambda b: b["data"].update(channelType="TELEGRAM\n"), "data.channelType"),
        (lambda b: b["data"].update(channelType="telegram"), "data.channelType"),
        (lambda b: b["data"].update(channelType="1TELEGRAM"), "data.channelType"),
        (lambda b: b["data"].update(channelType="_TELEGRAM"), "data.channelType"),
        (lambda b: b.update(id=7), "id"),
        (
            lambda b: b["data"]["participants"][0]["user"].update(id="one"),
            "data.participants.0.user.ChannelUser.id",
        ),
        (
            lambda b: b["data"]["participants"][1]["user"].update(__typename="Robot"),
            "data.participants.1.user",
        ),
        (
            lambda b: b["data"]["participants"][0]["user"]["identifiers"][0].pop("category"),
            "data.participants.0.user.ChannelUser.identifiers.0.category",
        ),
        (lambda b: b.pop("data"), "data"),
    ],
)
def test_invalid_conversation_event_names_the_field_path(mutate: Any, loc: str) -> None:
    body = seed()
    mutate(body)
    with pytest.raises(WebhookValidationError) as err:
        prepare(body, CODEC)
    assert loc in [p.loc for p in err.value.problems], err.value.problems
    assert all(p.msg for p in err.value.problems)


@pytest.mark.parametrize("event", ["message.created", "conversation_tag.created", "mention.created", "x"])
def test_non_conversation_events_are_ignored_without_validation(event: str) -> None:
    result = prepare({"event": event, "id": "abc", "whatever": [1]}, CODEC)
    assert result == Ignored(event, "abc")
    assert not is_conversation_event(event)


@pytest.mark.parametrize("body", [[], "x", 1, None, {"id": "no event"}, {"event": 5}])
def test_not_a_webhook_object_is_a_422(body: Any) -> None:
    with pytest.raises(WebhookValidationError) as err:
        prepare(body, CODEC)
    assert err.value.problems[0].loc in {"", "event"}


def test_every_conversation_event_is_keyed_by_account_or_by_conversation() -> None:
    for event in sorted(CONVERSATION_EVENTS):
        body = {**seed(), "event": event, "account": 42}
        body["data"]["id"] = 9
        prepared = prepare(body, CODEC)
        assert isinstance(prepared, Prepared) and prepared.event == event
        assert prepared.key == event_key(Webhook.model_validate(body)) == b"42"
        by_conversation = prepare(body, CODEC, key_by="conversation")
        assert isinstance(by_conversation, Prepared) and by_conversation.value == prepared.value
        assert by_conversation.key == event_key(Webhook.model_validate(body), "conversation") == b"42:9"


def test_a_key_that_is_not_known_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="key_by: 'inbox' is not one of account, conversation"):
        Intake(CODEC, "inbox")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="key_by"):
        GatewaySettings(bootstrap_servers="k:9092", key_by="inbox")  # type: ignore[arg-type]
