import json
from pathlib import Path

import pytest

from schemas import (
    BadMagicError,
    Codec,
    EncodeError,
    Subject,
    TruncatedRecordError,
    UnknownFingerprintError,
    conversation_codec,
    subject,
)
from schemas.codec import HEADER_EVENT_TYPE, HEADER_SUBJECT, HEADER_VERSION, MAGIC

from .samples import SEED_RECORD, TIME_FIELD, record

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def codec() -> Codec:
    return conversation_codec()


@pytest.mark.parametrize("event", sorted(TIME_FIELD))
def test_every_event_type_round_trips(codec: Codec, event: str) -> None:
    rec = record(event, t=1700000000 + len(event))
    assert codec.decode(codec.encode(rec)) == rec


def test_unknown_channel_type_travels_under_its_own_name(codec: Codec) -> None:
    rec = record("conversation.closed", channel="WECHAT_NEXT_GEN")
    assert codec.decode(codec.encode(rec))["data"]["channelType"] == "WECHAT_NEXT_GEN"


def test_frame_is_single_object_encoding(codec: Codec) -> None:
    data = codec.encode(SEED_RECORD)
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == subject("conversation_event").latest.fingerprint


def test_seed_example_decodes_to_its_values(codec: Codec) -> None:
    seed = json.loads((FIXTURES / "seed_conversation_closed.json").read_text())
    got = codec.decode(codec.encode(SEED_RECORD))
    assert got["id"] == seed["id"] and got["account"] == seed["account"]
    assert got["createdAt"] == seed["createdAt"]
    assert got["data"]["closedAt"] == seed["data"]["closedAt"]
    assert got["data"]["lastReadByAppUserAt"] == seed["data"]["lastReadByAppUserAt"]
    assert got["data"]["lastInboundMessageAt"] == seed["data"]["lastInboundMessageAt"]
    assert got["data"]["channelType"] == seed["data"]["channelType"]
    users = [p["user"] for p in got["data"]["participants"]]
    assert [name.rsplit(".", 1)[1] for name, _ in users] == [
        p["user"]["__typename"] for p in seed["data"]["participants"]
    ]
    assert users[0][1]["identifiers"] == seed["data"]["participants"][0]["user"]["identifiers"]


def test_golden_bytes_per_version() -> None:
    """Encoding is stable: each shipped version still writes and reads its golden bytes."""
    subj = subject("conversation_event")
    for v in subj.versions:
        golden = (FIXTURES / "conversation_event" / f"v{v.version}.bin").read_bytes()
        rec = json.loads((FIXTURES / "conversation_event" / f"v{v.version}.json").read_text())
        for p in rec["data"]["participants"]:
            p["user"] = tuple(p["user"])
        codec = Codec(subj, writer_version=v.version)
        assert codec.encode(rec) == golden
        decoded = Codec(subj).decode(golden)
        assert {k: decoded[k] for k in rec if k != "data"} == {k: rec[k] for k in rec if k != "data"}


def test_headers_name_event_subject_and_version(codec: Codec) -> None:
    h = dict(codec.headers("conversation.closed"))
    assert h[HEADER_EVENT_TYPE] == b"conversation.closed"
    assert h[HEADER_SUBJECT] == b"conversation_event"
    assert h[HEADER_VERSION] == str(subject("conversation_event").latest.version).encode()


def test_wrong_magic_is_a_typed_error(codec: Codec) -> None:
    data = codec.encode(SEED_RECORD)
    with pytest.raises(BadMagicError, match="c301"):
        codec.decode(b"\x07\x01" + data[2:])
    with pytest.raises(BadMagicError):
        codec.decode(b"")


def test_truncated_body_is_a_typed_error(codec: Codec) -> None:
    data = codec.encode(SEED_RECORD)
    for cut in (5, 11, len(data) // 2, len(data) - 1):
        with pytest.raises(TruncatedRecordError):
            codec.decode(data[:cut])


def test_trailing_garbage_is_a_typed_error(codec: Codec) -> None:
    with pytest.raises(TruncatedRecordError, match="trailing"):
        codec.decode(codec.encode(SEED_RECORD) + b"\x00\x00")


def test_unknown_fingerprint_names_it(codec: Codec) -> None:
    data = codec.encode(SEED_RECORD)
    forged = data[:2] + bytes.fromhex("0102030405060708") + data[10:]
    with pytest.raises(UnknownFingerprintError, match="0102030405060708") as info:
        codec.decode(forged)
    assert info.value.fingerprint == "0102030405060708"


def test_errors_are_distinct_types() -> None:
    kinds = {BadMagicError, TruncatedRecordError, UnknownFingerprintError}
    assert len(kinds) == 3 and not any(issubclass(a, b) for a in kinds for b in kinds if a is not b)


def test_record_that_does_not_fit_is_an_encode_error(codec: Codec) -> None:
    bad = record("conversation.closed")
    bad["account"] = "not-a-number"
    with pytest.raises(EncodeError, match="conversation_event"):
        codec.encode(bad)


def test_decode_many_isolates_bad_records(codec: Codec) -> None:
    good = codec.encode(SEED_RECORD)
    values = [good, good[:40], b"xx", good[:2] + b"\0" * 8 + good[10:], good, good]
    out = codec.decode_many(values)
    assert out[0] == out[4] == out[5] == SEED_RECORD
    assert isinstance(out[1], TruncatedRecordError)
    assert isinstance(out[2], BadMagicError)
    assert isinstance(out[3], UnknownFingerprintError)


def test_decode_many_matches_decode_for_a_block(codec: Codec) -> None:
    recs = [record(e, t=1700000000 + i) for i, e in enumerate(sorted(TIME_FIELD) * 20)]
    assert codec.decode_many([codec.encode(r) for r in recs]) == recs


def test_v1_records_keep_decoding_with_the_new_code() -> None:
    v1 = (FIXTURES / "conversation_event" / "v1.bin").read_bytes()
    got = conversation_codec().decode(v1)
    assert got["receivedAtMillis"] is None  # the v2 field's default
    assert got["data"]["closedAt"] == SEED_RECORD["data"]["closedAt"]


def test_an_older_build_reads_newer_records_through_the_resolver() -> None:
    """The previous release knew only v1; a v2 record decodes once its schema is found."""
    full = subject("conversation_event")
    v1_only = Subject(full.name, full.versions[:1])
    v2 = full.version(2)
    data = Codec(full).encode(SEED_RECORD)
    with pytest.raises(UnknownFingerprintError):
        Codec(v1_only).decode(data)
    asked: list[bytes] = []

    def registry(fp: bytes) -> dict[str, object] | None:
        asked.append(fp)
        return v2.raw if fp == v2.fingerprint else None

    old = Codec(v1_only, resolve_unknown=registry)
    got = old.decode(data)
    assert "receivedAtMillis" not in got  # decoded into the v1 reader schema
    assert got == {k: v for k, v in SEED_RECORD.items() if k != "receivedAtMillis"}
    old.decode(data)
    assert asked == [v2.fingerprint]  # learned once


def test_a_resolver_answer_with_the_wrong_fingerprint_is_refused() -> None:
    full = subject("conversation_event")
    data = Codec(full).encode(SEED_RECORD)
    v1_only = Subject(full.name, full.versions[:1])
    liar = Codec(v1_only, resolve_unknown=lambda fp: full.version(1).raw)
    with pytest.raises(UnknownFingerprintError):
        liar.decode(data)
