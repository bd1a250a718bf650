"""The frame and the body are read by an independent implementation: Apache `avro`."""

import io
import json

import avro.io
import avro.schema
import pytest

from schemas import conversation_codec, subject

from .samples import TIME_FIELD, record


def _untag(value: object) -> object:
    """fastavro's (record name, record) union tuples -> plain records, as Apache avro reads them."""
    if isinstance(value, tuple):
        return _untag(value[1])
    if isinstance(value, dict):
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def test_fingerprint_matches_apache_avro() -> None:
    for v in subject("conversation_event").versions:
        schema = avro.schema.parse(json.dumps(v.raw))
        assert schema.fingerprint("CRC-64-AVRO") == v.fingerprint


@pytest.mark.parametrize("event", sorted(TIME_FIELD))
def test_apache_avro_decodes_our_bytes_to_the_same_values(event: str) -> None:
    codec = conversation_codec()
    rec = record(event, t=1700000123, channel="BRAND_NEW_CHANNEL")
    framed = codec.encode(rec)
    schema = avro.schema.parse(json.dumps(codec.writer.raw))
    assert framed[2:10] == schema.fingerprint("CRC-64-AVRO")
    body = io.BytesIO(framed[10:])
    got = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(framed) - 10
    assert got == _untag(rec)


def test_we_decode_apache_avro_bytes() -> None:
    codec = conversation_codec()
    rec = record("conversation.opened", t=1700000999)
    schema = avro.schema.parse(json.dumps(codec.writer.raw))
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(_untag(rec), avro.io.BinaryEncoder(buf))
    framed = b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO") + buf.getvalue()
    assert framed == codec.encode(rec)
    assert codec.decode(framed) == rec
