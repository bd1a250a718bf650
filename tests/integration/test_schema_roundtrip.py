"""10,000 encoded events through a real broker come back byte- and value-identical."""

from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from schemas import conversation_codec
from schemas.codec import HEADER_EVENT_TYPE, HEADER_SUBJECT, HEADER_VERSION

EVENTS = (
    "conversation.created",
    "conversation.opened",
    "conversation.closed",
    "conversation.snoozed",
    "conversation.assigned",
)


def make_record(i: int) -> dict[str, object]:
    event = EVENTS[i % len(EVENTS)]
    field = {
        "created": "createdAt",
        "opened": "openedAt",
        "closed": "closedAt",
        "snoozed": "snoozedAt",
        "assigned": "assignedAt",
    }[event.split(".")[1]]
    data: dict[str, object] = {
        "id": i // 5,
        "channelType": ("TELEGRAM", "VIBER", "SOME_FUTURE_CHANNEL")[i % 3],
        "state": "CLOSED" if event.endswith("closed") else "OPENED",
        "snoozedUntil": None,
        "messageWindowExpiresAt": 1700000000 + i if i % 2 else None,
        "messageWindowExpiryConditions": [],
        "lastReadByAppUserAt": None if i % 4 else 1700000000,
        "lastInboundMessageAt": 1700000000 + i,
        "createdAt": None,
        "openedAt": None,
        "closedAt": None,
        "assignedAt": None,
        "snoozedAt": None,
        "channel": {"id": i % 11},
        "participants": [
            {
                "user": (
                    "io.convmetrics.events.ChannelUser",
                    {
                        "id": i,
                        "name": None,
                        "firstName": f"F{i}",
                        "lastName": "L",
                        "displayName": f"F{i} L",
                        "avatarUrl": None,
                        "optimisedAvatarUrl": None,
                        "identifiers": [{"sourceId": str(10**9 + i), "category": "TELEGRAM_ID"}],
                    },
                )
            },
            {
                "user": (
                    "io.convmetrics.events.AppUser",
                    {"id": i % 13, "fullName": "Agent", "displayName": None, "optimisedAvatarUrl": None},
                )
            },
        ],
    }
    data[field] = 1700000000 + i
    return {
        "event": event,
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "account": i % 17,
        "app": 1,
        "createdAt": 1700000000 + i,
        "deliveryAttempts": 1 + i % 2,
        "firstDeliveryAttempt": None,
        "data": data,
        "receivedAtMillis": None if i % 3 else 1700000000000 + i,
    }


def test_ten_thousand_events_round_trip(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(3, prefix="roundtrip")
    codec = conversation_codec()
    records = [make_record(i) for i in range(10_000)]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    for r in records:
        producer.produce(
            topic,
            key=str(r["account"]),  # as the gateway keys events (producer.mapping.event_key)
            value=codec.encode(r),
            headers=codec.headers(str(r["event"])),
        )
        producer.poll(0)
    assert producer.flush(60) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: dict[str, dict[str, object]] = {}
    headers_seen: set[tuple[bytes, bytes, bytes]] = set()
    try:
        for _ in range(600):
            for m in consumer.consume(2000, 0.5):
                assert m.error() is None
                rec = codec.decode(m.value())  # type: ignore[arg-type]
                got[str(rec["id"])] = rec
                h = dict(m.headers() or [])
                headers_seen.add((h[HEADER_EVENT_TYPE], h[HEADER_SUBJECT], h[HEADER_VERSION]))
                assert h[HEADER_EVENT_TYPE] == str(rec["event"]).encode()
            if len(got) >= len(records):
                break
    finally:
        consumer.close()
    assert len(got) == len(records)
    assert all(got[str(r["id"])] == r for r in records)
    assert {e for e, _, _ in headers_seen} == {e.encode() for e in EVENTS}
