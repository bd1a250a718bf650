"""Batch decoding: many framed records of one writer schema in one fastavro pass.

fastavro's `schemaless_reader` re-walks the schemas on every call, which costs more than
the decoding itself on small records. Bodies that share a writer schema concatenate into
a valid Avro object-container block, which fastavro's block reader decodes natively.
Any failure in a block falls back to record-by-record decoding, so a bad record still
gets its own typed error and never hides its neighbours.
"""

from __future__ import annotations

import json
import os
from io import BytesIO
from typing import Any

import fastavro

from schemas.registry import SchemaVersion

_SYNC = os.urandom(16)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_bytes(value: bytes) -> bytes:
    return _zigzag(len(value)) + value


def container_header(version: SchemaVersion) -> bytes:
    """Object-container header (magic, metadata, sync marker) for one writer schema."""
    schema_json = json.dumps(version.raw, separators=(",", ":")).encode()
    meta = (
        _zigzag(2)
        + _avro_bytes(b"avro.schema")
        + _avro_bytes(schema_json)
        + _avro_bytes(b"avro.codec")
        + _avro_bytes(b"null")
        + _zigzag(0)
    )
    return b"Obj\x01" + meta + _SYNC


def read_block(header: bytes, bodies: list[memoryview], reader_schema: Any) -> list[Any]:
    """Decode `bodies` (all written with the schema of `header`) as one container block."""
    data = b"".join(bodies)
    buf = header + _zigzag(len(bodies)) + _zigzag(len(data)) + data + _SYNC
    records = list(
        fastavro.reader(
            BytesIO(buf),
            reader_schema=reader_schema,
            return_record_name=True,
            return_record_name_override=True,
        )
    )
    if len(records) != len(bodies):
        raise ValueError(f"block of {len(bodies)} records decoded to {len(records)}")
    return records
