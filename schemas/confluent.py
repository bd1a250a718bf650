"""The Confluent wire format beside single-object encoding: pure framing, no I/O.

A Confluent-framed record is ``00`` + the writer schema's registry id (4 bytes, big-endian)
+ the Avro body; a single-object one is ``C3 01`` + its CRC-64-AVRO fingerprint + the
body. The first byte tells them apart, so one topic may hold both (a deployment switches
formats without a migration). The body is the same in both: reframing a record only
changes its head.
"""

from __future__ import annotations

import enum

from schemas.exceptions import BadMagicError, TruncatedRecordError

MAGIC = b"\x00"
HEADER_SIZE = 5  # magic (1) + schema id (4)
CONTENT_TYPE = b"application/vnd.apache.avro+binary; framing=confluent"
#: what `CONVMETRICS_WIRE_FORMAT` / `--wire-format` is read from
ENV_WIRE_FORMAT = "CONVMETRICS_WIRE_FORMAT"


class WireFormat(enum.StrEnum):
    """How records are framed on Kafka: chosen per deployment, read record by record."""

    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"

    @classmethod
    def parse(cls, text: str, *, source: str = "--wire-format") -> WireFormat:
        """The format named `text`; a ValueError naming `source` and the choices otherwise."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(f.value for f in cls)
            raise ValueError(f"{source}: unknown wire format {text!r}; choose one of {choices}") from None


def subject_name(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def prefix(schema_id: int) -> bytes:
    """The 5-byte head of a Confluent-framed record written with `schema_id`."""
    if not 0 <= schema_id < 1 << 31:
        raise ValueError(f"schema id {schema_id} is not a registry id (0 to 2^31-1)")
    return MAGIC + schema_id.to_bytes(4, "big")


def frame(schema_id: int, body: bytes) -> bytes:
    return prefix(schema_id) + body


def is_confluent(data: bytes) -> bool:
    return data[:1] == MAGIC


def split(data: bytes) -> tuple[int, memoryview]:
    """(schema id, body) of a Confluent-framed record, or the matching DecodeError."""
    if data[:1] != MAGIC:
        raise BadMagicError(bytes(data[:2]))
    if len(data) < HEADER_SIZE:
        raise TruncatedRecordError(
            f"record of {len(data)} bytes ends inside the 5-byte Confluent header (00 + schema id)"
        )
    return int.from_bytes(data[1:HEADER_SIZE], "big"), memoryview(data)[HEADER_SIZE:]


def schema_id_of(data: bytes) -> int:
    return split(data)[0]
