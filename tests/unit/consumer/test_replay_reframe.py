"""`dlq replay --wire-format confluent`: single-object records get the Confluent head."""

from __future__ import annotations

from typing import Any

from consumer.stream.replay import Reframer
from schemas import Codec, subject
from schemas.codec import CONTENT_TYPE, HEADER_CONTENT_TYPE
from schemas.confluent import CONTENT_TYPE as CONFLUENT_TYPE
from schemas.registry import SchemaVersion

from ..schemas.samples import SEED_RECORD


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int]] = []

    def schema_id(self, topic: str, version: SchemaVersion) -> int:
        self.asked.append((topic, version.subject, version.version))
        return 40 + version.version


def test_single_object_records_are_reframed_with_the_id_of_their_version() -> None:
    client = FakeClient()
    reframe = Reframer(client)  # type: ignore[arg-type]
    events = subject("conversation_event")
    record: dict[str, Any] = Codec(events).decode(Codec(events).encode(_seed()))
    headers = [("x", b"1"), (HEADER_CONTENT_TYPE, CONTENT_TYPE)]
    for version in (1, 2):
        single = Codec(events, writer_version=version).encode(_seed(version))
        value, out = reframe("t", single, headers)
        assert value == b"\x00" + (40 + version).to_bytes(4, "big") + single[10:]
        assert dict(out) == {"x": b"1", HEADER_CONTENT_TYPE: CONFLUENT_TYPE}
        reframe("t", single, headers)
    assert client.asked == [("t", "conversation_event", 1), ("t", "conversation_event", 2)]  # once each
    assert record["id"] == SEED_RECORD["id"]
    confluent = Codec(events, schema_id=7).encode(_seed())
    assert reframe("t", confluent, headers) == (confluent, headers)  # already Confluent: as it was
    unknown = b"\xc3\x01" + b"\x01" * 8 + b"body"
    assert reframe("t", unknown, headers) == (unknown, headers)  # a version this build lacks


def _seed(version: int = 2) -> dict[str, Any]:
    rec = dict(SEED_RECORD)
    if version == 1:
        rec.pop("receivedAtMillis")
    return rec
