"""Webhook -> Avro record of ``schemas/conversation_event``: pure functions, no I/O."""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from producer.models import AppUser, ChannelUser, Conversation, Webhook

#: The events that describe a conversation's lifecycle and go to Kafka. Every other
#: event the platform sends (``message.created``, ``conversation_tag.created``, ...) is
#: answered 202 and ignored.
CONVERSATION_EVENTS: frozenset[str] = frozenset(
    {
        "conversation.created",
        "conversation.opened",
        "conversation.closed",
        "conversation.snoozed",
        "conversation.assigned",
    }
)

NAMESPACE = "io.convmetrics.events"
CHANNEL_USER = f"{NAMESPACE}.ChannelUser"
APP_USER = f"{NAMESPACE}.AppUser"


def is_conversation_event(event: str) -> bool:
    """Whether an event of this name is produced (True) or ignored (False)."""
    return event in CONVERSATION_EVENTS


#: what an event's Kafka key holds (`--key-by`, the first the default). ``account``: the
#: account id, so all of an account's events are one partition's, and so are its metric
#: rows (a store keeps one row per key and partition: fewer rows to write, and an account's
#: numbers read from one partition's rows). ``conversation``: ``"<account>:<conversation
#: id>"``, the key before 2026-12-06, for a topic that already holds events keyed so (a
#: conversation's events must all be one partition's: docs/operations.md).
KeyBy = Literal["account", "conversation"]
KEY_BY: tuple[KeyBy, ...] = get_args(KeyBy)


def event_key(webhook: Webhook, key_by: KeyBy = "account") -> bytes:
    """The Kafka key of an event (see `KEY_BY`): its partition is the key's."""
    if key_by == "account":
        return str(webhook.account).encode()
    return f"{webhook.account}:{webhook.data.id}".encode()


def key_shape(key: bytes | None) -> KeyBy | None:
    """Which `event_key` made ``key``: ``conversation`` keys hold a colon, ``account`` keys
    do not; None: no key."""
    if key is None:
        return None
    return "conversation" if b":" in key else "account"


def to_record(webhook: Webhook, *, received_at_millis: int | None = None) -> dict[str, Any]:
    """The Avro record (the schema's exact fields) for a validated webhook.

    `received_at_millis`: when the gateway received it (unix ms), for the ingest-lag metric.
    """
    return {
        "event": webhook.event,
        "id": webhook.id,
        "account": webhook.account,
        "app": webhook.app,
        "createdAt": webhook.createdAt,
        "deliveryAttempts": webhook.deliveryAttempts,
        "firstDeliveryAttempt": webhook.firstDeliveryAttempt,
        "data": _conversation(webhook.data),
        "receivedAtMillis": received_at_millis,
    }


def _conversation(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "channelType": c.channelType,
        "state": c.state,
        "snoozedUntil": c.snoozedUntil,
        "messageWindowExpiresAt": c.messageWindowExpiresAt,
        "messageWindowExpiryConditions": [
            json.dumps(x, separators=(",", ":"), ensure_ascii=False)
            for x in c.messageWindowExpiryConditions or ()
        ],
        "lastReadByAppUserAt": c.lastReadByAppUserAt,
        "lastInboundMessageAt": c.lastInboundMessageAt,
        "createdAt": c.createdAt,
        "openedAt": c.openedAt,
        "closedAt": c.closedAt,
        "assignedAt": c.assignedAt,
        "snoozedAt": c.snoozedAt,
        "channel": None if c.channel is None else {"id": c.channel.id},
        "participants": [{"user": _user(p.user)} for p in c.participants or ()],
    }


def _user(user: ChannelUser | AppUser) -> tuple[str, dict[str, Any]]:
    if isinstance(user, AppUser):
        return APP_USER, {
            "id": user.id,
            "fullName": user.fullName,
            "displayName": user.displayName,
            "optimisedAvatarUrl": user.optimisedAvatarUrl,
        }
    return CHANNEL_USER, {
        "id": user.id,
        "name": user.name,
        "firstName": user.firstName,
        "lastName": user.lastName,
        "displayName": user.displayName,
        "avatarUrl": user.avatarUrl,
        "optimisedAvatarUrl": user.optimisedAvatarUrl,
        "identifiers": [{"sourceId": i.sourceId, "category": i.category} for i in user.identifiers],
    }
