"""The direct Avro writer gives the reference path's bytes (record dict + fastavro), always."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.encoder import WRITES, body_writer, write_body
from producer.exceptions import WebhookValidationError
from producer.intake import Prepared, prepare
from producer.mapping import to_record
from producer.models import CHANNEL_TYPE_PATTERN, MAX_EVENT_TIME, Webhook
from schemas import Codec, conversation_codec, subject

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SEED: dict[str, Any] = json.loads((FIXTURES / "seed_conversation_closed.json").read_text())
CODEC = conversation_codec()

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
SMALL = st.integers(min_value=-300, max_value=300)
TEXT = st.text(max_size=40)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


JSON = st.recursive(
    st.none() | st.booleans() | LONG | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
CHANNEL_USER = st.fixed_dictionaries(
    {"__typename": st.just("ChannelUser"), "id": LONG | SMALL},
    optional={
        **{k: opt(TEXT) for k in ("name", "firstName", "lastName", "displayName", "avatarUrl")},
        "optimisedAvatarUrl": opt(TEXT),
        "identifiers": st.lists(st.fixed_dictionaries({"sourceId": TEXT, "category": TEXT}), max_size=3),
    },
)
APP_USER = st.fixed_dictionaries(
    {"__typename": st.just("AppUser"), "id": LONG | SMALL},
    optional={k: opt(TEXT) for k in ("fullName", "displayName", "optimisedAvatarUrl")},
)
TIMES = ("createdAt", "openedAt", "closedAt", "assignedAt", "snoozedAt")  # event times, bounded
EVENT_TIME = st.integers(min_value=0, max_value=MAX_EVENT_TIME)
DATA = st.fixed_dictionaries(
    {"id": LONG | SMALL, "channelType": st.from_regex(CHANNEL_TYPE_PATTERN, fullmatch=True)},
    optional={
        "state": opt(TEXT),
        "snoozedUntil": opt(LONG),
        "messageWindowExpiresAt": opt(LONG),
        "messageWindowExpiryConditions": opt(st.lists(JSON, max_size=3)),
        "lastInboundMessageAt": opt(LONG | SMALL),
        "lastReadByAppUserAt": opt(LONG),
        **{k: opt(EVENT_TIME) for k in TIMES},
        "channel": opt(st.fixed_dictionaries({"id": LONG | SMALL})),
        "participants": opt(st.lists(st.fixed_dictionaries({"user": CHANNEL_USER | APP_USER}), max_size=4)),
    },
)
WEBHOOK = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["conversation.closed", "conversation.created", "conversation.opened"]),
        "id": TEXT.filter(bool),
        "account": LONG | SMALL,
        "app": LONG,
        "createdAt": EVENT_TIME,
        "data": DATA,
    },
    optional={"deliveryAttempts": INT | SMALL, "firstDeliveryAttempt": opt(LONG)},
)


def reference(webhook: Webhook, received: int | None, codec: Codec = CODEC) -> bytes:
    return codec.encode(to_record(webhook, received_at_millis=received))[10:]


def test_it_writes_the_version_the_codec_writes() -> None:
    assert CODEC.writer.fingerprint_hex == WRITES, "schema changed: bring producer/encoder.py up to date"
    assert body_writer(CODEC) is write_body


def test_seed_bytes_equal_the_reference() -> None:
    webhook = Webhook.model_validate(SEED)
    for received in (None, 0, 1652968659123, -1, 2**63 - 1):
        assert write_body(webhook, received) == reference(webhook, received)


@settings(max_examples=400, deadline=None)
@given(WEBHOOK, opt(LONG))
def test_any_valid_webhook_encodes_to_the_reference_bytes(body: dict[str, Any], received: int | None) -> None:
    webhook = Webhook.model_validate(body)
    assert write_body(webhook, received) == reference(webhook, received)


def test_a_codec_writing_another_version_takes_the_reference_path() -> None:
    v1 = Codec(subject("conversation_event"), writer_version=1)
    assert body_writer(v1) is None
    prepared = prepare(copy.deepcopy(SEED), v1)
    assert isinstance(prepared, Prepared)
    assert prepared.value == v1.encode(to_record(Webhook.model_validate(SEED)))


def test_a_string_utf8_cannot_hold_is_refused_before_it_is_written() -> None:
    body = copy.deepcopy(SEED)
    body["data"]["state"] = "bad \ud800 surrogate"
    with pytest.raises(WebhookValidationError) as err:
        prepare(body, CODEC)
    assert [p.loc for p in err.value.problems] == ["data.state"]
