"""The Confluent framing and the codec reading both framings (registry faked: a dict)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from schemas import Codec, subject
from schemas.codec import HEADER_CONTENT_TYPE
from schemas.confluent import WireFormat, frame, prefix, split, subject_name
from schemas.exceptions import (
    BadMagicError,
    ForeignSchemaError,
    TruncatedRecordError,
    UnknownSchemaIdError,
)

from .samples import SEED_RECORD, TIME_FIELD, record

EVENTS = subject("conversation_event")
V1, V2 = EVENTS.version(1), EVENTS.version(2)
FOREIGN = {"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "id", "type": "long"}]}


class FakeRegistry:
    """id -> schema JSON, counting lookups (the registry must not be on the hot path)."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []

    def __call__(self, schema_id: int) -> Any:
        self.asked.append(schema_id)
        return self.schemas.get(schema_id)


def test_frame_is_zero_then_the_id_big_endian_then_the_body() -> None:
    assert prefix(7) == b"\x00\x00\x00\x00\x07"
    assert frame(0x01020304, b"body") == b"\x00\x01\x02\x03\x04body"
    schema_id, body = split(frame(258, b"xyz"))
    assert schema_id == 258 and bytes(body) == b"xyz"
    assert struct.unpack(">bI", prefix(2**31 - 1)) == (0, 2**31 - 1)


@pytest.mark.parametrize("bad", [-1, 2**31])
def test_an_id_outside_the_registry_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="registry id"):
        prefix(bad)


def test_split_names_a_short_header_and_a_wrong_marker() -> None:
    with pytest.raises(TruncatedRecordError, match="5-byte Confluent header"):
        split(b"\x00\x00\x01")
    with pytest.raises(BadMagicError, match="c301"):
        split(b"\xc3\x01rest")


def test_wire_format_names_and_refusal() -> None:
    assert WireFormat.parse(" Confluent ") is WireFormat.CONFLUENT
    assert WireFormat.parse("single-object") is WireFormat.SINGLE_OBJECT
    with pytest.raises(
        ValueError, match=r"CONVMETRICS_WIRE_FORMAT: unknown wire format 'avro'.*single-object"
    ):
        WireFormat.parse("avro", source="CONVMETRICS_WIRE_FORMAT")
    assert subject_name("conversation-events") == "conversation-events-value"


@pytest.mark.parametrize("event", sorted(TIME_FIELD))
def test_confluent_codec_round_trips_with_the_same_body(event: str) -> None:
    rec = record(event, t=1700000000 + len(event))
    single, conf = Codec(EVENTS), Codec(EVENTS, schema_id=42)
    a, b = single.encode(rec), conf.encode(rec)
    assert b[:5] == b"\x00\x00\x00\x00\x2a" and a[10:] == b[5:]  # only the head differs
    assert conf.decode(b) == single.decode(a) == rec
    assert dict(conf.headers(event))[HEADER_CONTENT_TYPE].endswith(b"framing=confluent")


def test_one_reader_decodes_both_framings_record_by_record() -> None:
    registry = FakeRegistry({11: V2.raw, 12: V1.raw})
    reader = Codec(EVENTS, resolve_id=registry)
    v1 = Codec(EVENTS, writer_version=1, schema_id=12)
    recs = [record(e, t=1700000000 + i) for i, e in enumerate(sorted(TIME_FIELD) * 3)]
    values = []
    for i, r in enumerate(recs):
        values.append((Codec(EVENTS), Codec(EVENTS, schema_id=11))[i % 2].encode(r))
    values.append(v1.encode({k: v for k, v in SEED_RECORD.items() if k != "receivedAtMillis"}))
    out = reader.decode_many(values)
    assert out[:-1] == recs
    assert out[-1]["id"] == SEED_RECORD["id"]  # v1 resolved into v2 (receivedAtMillis null)
    assert out[-1]["receivedAtMillis"] is None
    assert sorted(registry.asked) == [11, 12]  # once per id, never per record
    reader.decode_many(values)
    assert sorted(registry.asked) == [11, 12]
    assert reader.version_of(values[1]).version == 2 and reader.version_of(values[-1]).version == 1


def test_an_id_the_registry_does_not_know_is_asked_again_only_later() -> None:
    registry = FakeRegistry({})
    reader = Codec(EVENTS, resolve_id=registry)
    value = Codec(EVENTS, schema_id=99).encode(SEED_RECORD)
    out = reader.decode_many([value, value, value])
    assert all(isinstance(e, UnknownSchemaIdError) and e.schema_id == 99 for e in out)
    assert "schema id 99: the schema registry does not know it" in str(out[0])
    assert registry.asked == [99]  # misses are remembered for a while too


def test_without_a_registry_a_confluent_record_says_what_to_configure() -> None:
    value = Codec(EVENTS, schema_id=5).encode(SEED_RECORD)
    with pytest.raises(UnknownSchemaIdError, match="CONVMETRICS_SCHEMA_REGISTRY_URL"):
        Codec(EVENTS).decode(value)


def test_a_schema_that_is_not_ours_is_foreign_and_remembered() -> None:
    registry = FakeRegistry({3: FOREIGN, 4: {"type": "string"}})
    reader = Codec(EVENTS, resolve_id=registry)
    value = Codec(EVENTS, schema_id=3).encode(SEED_RECORD)
    for _ in range(2):
        with pytest.raises(
            ForeignSchemaError, match=r"schema id 3, which is not ours: it is shop\.Order, not "
        ):
            reader.decode(value)
    with pytest.raises(ForeignSchemaError, match="unnamed schema"):
        reader.decode(b"\x00\x00\x00\x00\x04" + value[5:])
    assert registry.asked == [3, 4]


def test_a_newer_version_of_our_record_is_read_when_it_resolves() -> None:
    newer = dict(V2.raw)
    newer["fields"] = [*V2.raw["fields"], {"name": "extra", "type": ["null", "string"], "default": None}]
    reader = Codec(EVENTS, resolve_id=FakeRegistry({8: newer}))
    from schemas.fast import make_writer

    body = make_writer(newer)({**SEED_RECORD, "extra": "x"})
    assert reader.decode(frame(8, body)) == SEED_RECORD
    # the same record name but a field type that cannot be resolved: foreign, and why
    broken = dict(V2.raw)
    broken["fields"] = [{"name": "event", "type": "long"}, *V2.raw["fields"][1:]]
    with pytest.raises(ForeignSchemaError, match="cannot be read as conversation_event"):
        Codec(EVENTS, resolve_id=FakeRegistry({9: broken})).decode(frame(9, body))


def test_a_corrupt_confluent_body_is_a_typed_error_naming_the_id() -> None:
    value = Codec(EVENTS, schema_id=6).encode(SEED_RECORD)
    reader = Codec(EVENTS, resolve_id=FakeRegistry({6: V2.raw}))
    with pytest.raises(TruncatedRecordError, match="schema id 6"):
        reader.decode(value[:-3])
    with pytest.raises(TruncatedRecordError, match="Confluent header"):
        reader.decode(b"\x00\x00")
    out = reader.decode_many([value, value + b"\x00", value])
    assert out[0] == out[2] == SEED_RECORD and isinstance(out[1], TruncatedRecordError)


def test_a_registry_that_does_not_answer_is_not_a_decode_error() -> None:
    from schemas.exceptions import DecodeError, RegistryUnavailableError

    def down(_: int) -> Any:
        raise RegistryUnavailableError("schema registry at http://x did not answer")

    value = Codec(EVENTS, schema_id=6).encode(SEED_RECORD)
    assert not issubclass(RegistryUnavailableError, DecodeError)  # never dead-lettered for it
    with pytest.raises(RegistryUnavailableError):
        Codec(EVENTS, resolve_id=down).decode_many([value])
