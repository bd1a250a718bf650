"""Avro-shaped conversation events for codec tests (the gateway's mapping is tested apart)."""

from __future__ import annotations

import copy
from typing import Any

CHANNEL_USER = "io.convmetrics.events.ChannelUser"
APP_USER = "io.convmetrics.events.AppUser"
TIME_FIELD = {
    "conversation.created": "createdAt",
    "conversation.opened": "openedAt",
    "conversation.closed": "closedAt",
    "conversation.snoozed": "snoozedAt",
    "conversation.assigned": "assignedAt",
}

#: The seed example (shared/seeds/conversation-closed.md) as a v1 Avro record.
SEED_RECORD_V1: dict[str, Any] = {
    "event": "conversation.closed",
    "id": "30837b84-b007-46dd-943a-092513f69cd8",
    "account": 1,
    "app": 1,
    "createdAt": 1652968658,
    "deliveryAttempts": 1,
    "firstDeliveryAttempt": 1652968658,
    "data": {
        "id": 1,
        "channelType": "TELEGRAM",
        "state": "CLOSED",
        "snoozedUntil": None,
        "messageWindowExpiresAt": None,
        "messageWindowExpiryConditions": [],
        "lastReadByAppUserAt": 1652094016,
        "lastInboundMessageAt": 1652784981,
        "createdAt": None,
        "openedAt": None,
        "closedAt": 1652783952,
        "assignedAt": None,
        "snoozedAt": None,
        "channel": {"id": 1},
        "participants": [
            {
                "user": (
                    CHANNEL_USER,
                    {
                        "id": 1,
                        "name": None,
                        "firstName": "Ahmed",
                        "lastName": "Abbas",
                        "displayName": "Ahmed Abbas",
                        "avatarUrl": None,
                        "optimisedAvatarUrl": None,
                        "identifiers": [{"sourceId": "1765698763", "category": "TELEGRAM_ID"}],
                    },
                )
            },
            {
                "user": (
                    APP_USER,
                    {"id": 1, "fullName": None, "displayName": None, "optimisedAvatarUrl": None},
                )
            },
        ],
    },
}


#: ... and as the latest version writes it: v2 adds the gateway's receive time.
SEED_RECORD: dict[str, Any] = {**SEED_RECORD_V1, "receivedAtMillis": 1652968659123}


def record(event: str, *, t: int = 1652783952, channel: str = "TELEGRAM", **data: Any) -> dict[str, Any]:
    """A full record of `event` at time `t`, based on the seed."""
    r = copy.deepcopy(SEED_RECORD)
    r["event"] = event
    r["data"]["state"] = "CLOSED" if event == "conversation.closed" else "OPENED"
    r["data"]["closedAt"] = None
    r["data"][TIME_FIELD[event]] = t
    r["data"]["channelType"] = channel
    r["data"].update(data)
    return r
