"""The slice of a conversation event the metrics need, read from a decoded Avro record.

The consumer decodes with a projection of the contract (`READER_SCHEMA`): fastavro skips
the fields it does not name, which makes decoding cheaper. The projection must stay
resolvable from every shipped version; a unit test checks that with `schemas.compat`.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Final, NamedTuple

from consumer.fold.registry import Registry

CREATED: Final = 0
OPENED: Final = 1
CLOSED: Final = 2
SNOOZED: Final = 3
ASSIGNED: Final = 4

KINDS: Final[dict[str, int]] = {
    "conversation.created": CREATED,
    "conversation.opened": OPENED,
    "conversation.closed": CLOSED,
    "conversation.snoozed": SNOOZED,
    "conversation.assigned": ASSIGNED,
}
#: The data.<verb>At field that holds each kind's event time.
TIME_FIELDS: Final[dict[int, str]] = {
    CREATED: "createdAt",
    OPENED: "openedAt",
    CLOSED: "closedAt",
    SNOOZED: "snoozedAt",
    ASSIGNED: "assignedAt",
}

_NULL_LONG: Final = {"type": ["null", "long"], "default": None}

READER_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "ConversationEvent",
    "namespace": "io.convmetrics.events",
    "fields": [
        {"name": "event", "type": "string"},
        {"name": "id", "type": "string"},
        {"name": "account", "type": "long"},
        {"name": "app", "type": "long"},
        {"name": "createdAt", "type": "long"},
        {"name": "receivedAtMillis", "type": ["null", "long"], "default": None},
        {
            "name": "data",
            "type": {
                "type": "record",
                "name": "Conversation",
                "fields": [
                    {"name": "id", "type": "long"},
                    {"name": "channelType", "type": "string"},
                    {"name": "lastReadByAppUserAt", **_NULL_LONG},
                    {"name": "lastInboundMessageAt", **_NULL_LONG},
                    {"name": "messageWindowExpiresAt", **_NULL_LONG},
                    *({"name": f, **_NULL_LONG} for f in TIME_FIELDS.values()),
                    {
                        "name": "channel",
                        "type": [
                            "null",
                            {"type": "record", "name": "Channel", "fields": [{"name": "id", "type": "long"}]},
                        ],
                        "default": None,
                    },
                ],
            },
        },
    ],
}


#: the fields only some metric sets read: (top-level, in data)
def reader_schema(registry: Registry) -> dict[str, Any]:
    """The projection a consumer of `registry` decodes with: `READER_SCHEMA` without the
    fields its metrics never read (app and data.channel unless a grouping names inbox or
    app; data.messageWindowExpiresAt unless a counter counts expired windows): fastavro
    skips what the reader does not name, and the closures set decodes as it did before
    issue 15."""
    top: set[str] = set() if registry.groups_by_inbox_or_app else {"app"}
    nested: set[str] = set() if registry.groups_by_inbox_or_app else {"channel"}
    if not any(m.when == "window_expired" for m in registry.metrics):
        nested.add("messageWindowExpiresAt")
    if not top and not nested:
        return READER_SCHEMA
    schema = copy.deepcopy(READER_SCHEMA)
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in top]
    data = next(f for f in schema["fields"] if f["name"] == "data")
    data["type"]["fields"] = [f for f in data["type"]["fields"] if f["name"] not in nested]
    return schema


class Event(NamedTuple):
    """One conversation event as the fold sees it."""

    kind: int
    event_hash: int  # 64-bit digest of the event id: the dedupe identity
    account: int
    conversation: int
    channel_type: str
    time: int  # event time, unix seconds
    last_read: int | None = None
    last_inbound: int | None = None
    received_ms: int | None = None  # when the gateway received it (v2 records), unix ms
    inbox: int | None = None  # data.channel.id: the account's inbox (channel) it came through
    app: int | None = None  # the envelope's app id
    window_expires: int | None = None  # data.messageWindowExpiresAt
    #: the envelope's id (first_closes and time to first assignment break ties by it)
    event_id: str = ""

    @property
    def window_expired(self) -> bool:
        """A closure after the messaging window had closed (`closed_window_expired`)."""
        return self.window_expires is not None and self.window_expires < self.time

    @property
    def unread(self) -> bool:
        """The customer's last message was never read by an agent."""
        return self.last_inbound is not None and (
            self.last_read is None or self.last_read < self.last_inbound
        )


_blake2b = hashlib.blake2b
_new_event = tuple.__new__


def event_hash(event_id: str) -> int:
    """Stable signed 64-bit digest of an event id (fits SQLite INTEGER)."""
    return int.from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "little", signed=True)


def from_record(record: dict[str, Any]) -> Event | None:
    """The Event of a decoded record, or None for an event type the metrics do not use."""
    kind = KINDS.get(record["event"])
    if kind is None:
        return None
    data = record["data"]
    t = data.get(TIME_FIELDS[kind])
    channel = data.get("channel")  # absent where the metric set needs no inbox (`reader_schema`)
    event_id = record["id"]
    # tuple.__new__ skips Event.__new__'s Python frame (this runs for every record)
    return _new_event(
        Event,
        (
            kind,
            # event_hash(), inlined
            int.from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "little", signed=True),
            record["account"],
            data["id"],
            data["channelType"],
            record["createdAt"] if t is None else t,
            data["lastReadByAppUserAt"],
            data["lastInboundMessageAt"],
            record["receivedAtMillis"],
            None if channel is None else channel["id"],
            record.get("app"),
            data.get("messageWindowExpiresAt"),
            event_id,
        ),
    )
