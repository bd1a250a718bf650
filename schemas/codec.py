"""Avro single-object framing: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + Avro body.

The writer schema is found by fingerprint among the versions shipped in `schemas/`, and
the body is resolved into one reader schema (by default the subject's latest version).
Unions of records come back as ``(full record name, record)`` tuples where a union holds
more than one record (the participants' ChannelUser/AppUser), which is also the shape
`encode` takes, so values round-trip unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.exceptions import (
    BadMagicError,
    DecodeError,
    EncodeError,
    TruncatedRecordError,
    UnknownFingerprintError,
)
from schemas.fast import READ_ERRORS, Reader, TrailingBytesError, make_reader, make_writer
from schemas.registry import SchemaVersion, Subject

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10  # magic (2) + fingerprint (8)

HEADER_EVENT_TYPE = "convmetrics-event-type"
HEADER_SUBJECT = "convmetrics-schema-subject"
HEADER_VERSION = "convmetrics-schema-version"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE = b"application/vnd.apache.avro+binary; framing=single-object"


def split_frame(data: bytes) -> tuple[bytes, memoryview]:
    """Return (fingerprint, body) of a framed record, or raise the matching DecodeError."""
    if data[:2] != MAGIC:
        raise BadMagicError(bytes(data[:2]))
    if len(data) < HEADER_SIZE:
        raise TruncatedRecordError(
            f"record of {len(data)} bytes ends inside the 10-byte single-object header"
        )
    return bytes(data[2:HEADER_SIZE]), memoryview(data)[HEADER_SIZE:]


class Codec:
    """Encodes with one writer version, decodes any shipped version into one reader schema.

    Args:
        subject: the subject whose versions this codec knows.
        writer_version: version `encode` writes (default: latest).
        reader_schema: reader schema JSON for `decode` (default: the latest version). A
            projection (a subset of fields) is allowed and makes decoding cheaper.
        resolve_unknown: where to look up a writer schema this build does not ship (a
            record from a newer producer), e.g. `schemas.topic_registry.TopicSchemaResolver`.
            Its answer is used only if its fingerprint matches.
    """

    def __init__(
        self,
        subject: Subject,
        *,
        writer_version: int | None = None,
        reader_schema: Mapping[str, Any] | None = None,
        resolve_unknown: Callable[[bytes], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.subject = subject
        self.writer = subject.latest if writer_version is None else subject.version(writer_version)
        self._write = make_writer(self.writer.raw)
        self._prefix = MAGIC + self.writer.fingerprint
        reader = subject.latest.raw if reader_schema is None else reader_schema
        self._reader_raw = reader
        self._resolve_unknown = resolve_unknown
        self._misses: dict[bytes, float] = {}  # unknown fingerprint -> when to ask again
        self._known = [v.fingerprint_hex for v in subject.versions]
        self._readers: dict[bytes, Reader] = {
            v.fingerprint: make_reader(v.raw, None if v.raw == reader else reader) for v in subject.versions
        }

    def encode(self, record: Mapping[str, Any]) -> bytes:
        try:
            return self._prefix + self._write(record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(
                f"record does not fit {self.subject.name} v{self.writer.version}: {exc}"
            ) from exc

    def headers(self, event_type: str) -> list[tuple[str, bytes]]:
        """Kafka record headers for tools that do not speak Avro."""
        return [
            (HEADER_EVENT_TYPE, event_type.encode()),
            (HEADER_SUBJECT, self.subject.name.encode()),
            (HEADER_VERSION, str(self.writer.version).encode()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE),
        ]

    def decode(self, data: bytes) -> dict[str, Any]:
        fp, body = split_frame(data)
        read = self._readers.get(fp) or self._learn(fp)
        try:
            record: dict[str, Any] = read(body)
        except TrailingBytesError as exc:
            raise TruncatedRecordError(
                f"Avro body of {len(body)} bytes has {exc}: corrupt or wrongly framed "
                f"(writer fingerprint {fp.hex()})"
            ) from exc
        except READ_ERRORS as exc:
            raise TruncatedRecordError(
                f"Avro body of {len(body)} bytes is truncated or corrupt "
                f"(writer fingerprint {fp.hex()}): {exc!r}"
            ) from exc
        return record

    def _learn(self, fp: bytes) -> Reader:
        """A reader for a writer schema this build lacks, if `resolve_unknown` knows it."""
        if self._resolve_unknown is None or self._misses.get(fp, 0.0) > time.monotonic():
            raise UnknownFingerprintError(fp.hex(), self._known)
        raw = self._resolve_unknown(fp)
        if raw is not None:
            actual = bytes.fromhex(fingerprint(to_parsing_canonical_form(dict(raw)), "CRC-64-AVRO"))
            if actual == fp:
                try:
                    read = make_reader(raw, None if raw == self._reader_raw else self._reader_raw)
                except Exception as exc:  # fastavro: the writer cannot be resolved into our reader
                    raise DecodeError(
                        f"writer schema {fp.hex()} (found in the schema registry) cannot be read as "
                        f"{self.subject.name}: {exc}"
                    ) from exc
                self._readers[fp] = read
                self._known.append(f"{fp.hex()} (from the registry: {json.dumps(raw.get('name'))})")
                return read
        self._misses[fp] = time.monotonic() + 30.0  # do not ask again for every record
        raise UnknownFingerprintError(fp.hex(), self._known)

    def decode_many(self, values: list[bytes]) -> list[dict[str, Any] | DecodeError]:
        """Decode a batch; each item is the record or the DecodeError for that value."""
        out: list[dict[str, Any] | DecodeError] = []
        append, decode, readers = out.append, self.decode, self._readers
        for value in values:
            # fast path: a known writer and a sound body; anything else takes `decode`,
            # which names the error
            if value.startswith(MAGIC) and len(value) > HEADER_SIZE:
                read = readers.get(value[2:HEADER_SIZE])
                if read is not None:
                    try:
                        append(read(value[HEADER_SIZE:]))
                        continue
                    except READ_ERRORS:
                        pass
            try:
                append(decode(value))
            except DecodeError as exc:
                append(exc)
        return out

    def version_of(self, data: bytes) -> SchemaVersion:
        """The shipped writer version of a framed record."""
        fp, _ = split_frame(data)
        for v in self.subject.versions:
            if v.fingerprint == fp:
                return v
        raise UnknownFingerprintError(fp.hex(), self._known)
