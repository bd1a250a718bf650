"""The consumer's projection is decoded by cavro; it must read exactly what fastavro reads."""

import random
from io import BytesIO

import fastavro
import pytest

from consumer.fold.model import READER_SCHEMA, reader_schema
from consumer.fold.registry import METRIC_SETS
from convmetrics.generate import GenerateConfig, generate_webhooks
from producer.intake import Prepared, prepare
from schemas import CONVERSATION_EVENT, Codec, DecodeError, TruncatedRecordError, subject
from schemas.codec import HEADER_SIZE
from schemas.fast import cavro, make_reader

pytestmark = pytest.mark.skipif(cavro is None, reason="cavro not installed")  # it is a dependency


def encoded(version: int, n: int = 1500) -> list[bytes]:
    codec = Codec(subject(CONVERSATION_EVENT), writer_version=version)
    out = []
    for w in generate_webhooks(GenerateConfig(events=n, seed=version, noise_rate=0.0)):
        p = prepare(w, codec, received_at_millis=1_700_000_000_123 if version > 1 else None)
        if isinstance(p, Prepared):
            out.append(p.value)
    return out


@pytest.mark.parametrize("metric_set", sorted(METRIC_SETS))
@pytest.mark.parametrize("version", [1, 2])
def test_projection_reads_what_fastavro_reads(version: int, metric_set: str) -> None:
    """Each metric set's projection (the closures set's leaves out app, data.channel and
    data.messageWindowExpiresAt), from each shipped version."""
    sub = subject(CONVERSATION_EVENT)
    writer = sub.version(version).raw
    projection = reader_schema(METRIC_SETS[metric_set])
    fast = make_reader(writer, projection)
    parsed_w, parsed_r = fastavro.parse_schema(dict(writer)), fastavro.parse_schema(dict(projection))
    values = encoded(version)
    assert len(values) > 1000
    for v in values:
        body = v[HEADER_SIZE:]
        expected = fastavro.schemaless_reader(BytesIO(body), parsed_w, parsed_r)
        assert fast(body) == expected
        assert ("app" in expected) is (metric_set == "full")
        assert ("channel" in expected["data"]) is (metric_set == "full")


def test_corrupt_bodies_are_typed_errors_never_crashes() -> None:
    codec = Codec(subject(CONVERSATION_EVENT), reader_schema=READER_SCHEMA)
    rng = random.Random(7)
    values = encoded(2, 400)
    outcomes = {"decoded": 0, "error": 0}
    for v in values:
        cut = v[: rng.randrange(HEADER_SIZE, len(v))]
        with pytest.raises(TruncatedRecordError):
            codec.decode(cut)
        with pytest.raises(TruncatedRecordError, match="trailing"):
            codec.decode(v + bytes([rng.randrange(256)]))
        # the batch path answers the same, item by item
        batch = codec.decode_many([cut, v, v + b"\x00"])
        assert isinstance(batch[0], TruncatedRecordError) and isinstance(batch[2], TruncatedRecordError)
        assert batch[1] == codec.decode(v)
        flipped = bytearray(v)
        for _ in range(3):
            flipped[rng.randrange(HEADER_SIZE, len(v))] = rng.randrange(256)
        try:
            codec.decode(bytes(flipped))
            outcomes["decoded"] += 1
        except DecodeError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # flips that break the structure are caught as DecodeError
