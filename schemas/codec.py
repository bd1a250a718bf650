"""Avro records in either framing: single-object (``C3 01`` + 8-byte CRC-64-AVRO fingerprint
+ body) or Confluent (``00`` + 4-byte registry schema id + body; `schemas.confluent`).

The first byte tells the two apart, record by record. A single-object writer schema is
found by fingerprint among the versions shipped in `schemas/`; a Confluent one by its id,
asked of the schema registry once per id (`resolve_id`) and cached, and accepted only if
it is one of ours. The body is resolved into one reader schema (by default the subject's
latest version).
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

from schemas import confluent
from schemas.compat import full_name, incompatibilities
from schemas.exceptions import (
    BadMagicError,
    DecodeError,
    EncodeError,
    ForeignSchemaError,
    TruncatedRecordError,
    UnknownFingerprintError,
    UnknownSchemaIdError,
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


#: how long an id the registry did not know (or a fingerprint nobody knew) is not asked again
MISS_SECONDS = 30.0


def fingerprint_of(raw: Mapping[str, Any]) -> bytes:
    """The CRC-64-AVRO fingerprint of a schema (JSON), as framed on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(dict(raw)), "CRC-64-AVRO"))


def split_frame(data: bytes) -> tuple[bytes, memoryview]:
    """Return (fingerprint, body) of a single-object record, or raise the matching DecodeError."""
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
        schema_id: the writer version's id in the schema registry: `encode` then writes the
            Confluent framing (default: single-object).
        resolve_id: the schema (JSON) a registry holds under an id, or None when it holds
            none, e.g. `schemas.schema_registry.RegistryClient.schema_by_id`; asked once per
            id (an unknown one again after `MISS_SECONDS`). It may raise
            `RegistryUnavailableError`, which `decode` lets through: a registry that does not
            answer is no reason to dead-letter a record.
    """

    def __init__(
        self,
        subject: Subject,
        *,
        writer_version: int | None = None,
        reader_schema: Mapping[str, Any] | None = None,
        resolve_unknown: Callable[[bytes], Mapping[str, Any] | None] | None = None,
        schema_id: int | None = None,
        resolve_id: Callable[[int], Any] | None = None,
    ) -> None:
        self.subject = subject
        self.writer = subject.latest if writer_version is None else subject.version(writer_version)
        self._write = make_writer(self.writer.raw)
        self.schema_id = schema_id
        #: the head of every record `encode` writes (framing and writer schema)
        self.prefix = MAGIC + self.writer.fingerprint if schema_id is None else confluent.prefix(schema_id)
        self._content_type = CONTENT_TYPE if schema_id is None else confluent.CONTENT_TYPE
        reader = subject.latest.raw if reader_schema is None else reader_schema
        self._reader_raw = reader
        self._resolve_unknown = resolve_unknown
        self._misses: dict[bytes, float] = {}  # unknown fingerprint -> when to ask again
        self._known = [v.fingerprint_hex for v in subject.versions]
        self._readers: dict[bytes, Reader] = {
            v.fingerprint: make_reader(v.raw, None if v.raw == reader else reader) for v in subject.versions
        }
        self._name = full_name(subject.latest.raw)
        self._resolve_id = resolve_id
        #: registry id -> reader; ids never change their schema, so hits are kept for good
        self._by_id: dict[int, Reader] = {}
        self._by_prefix: dict[bytes, Reader] = {}  # the same, keyed by the 5-byte Confluent head
        self._id_versions: dict[int, SchemaVersion] = {}
        self._foreign: dict[int, str] = {}  # id -> why it is not ours (kept for good too)
        self._id_misses: dict[int, float] = {}  # unknown id -> when to ask again
        if schema_id is not None:
            self._by_id[schema_id] = self._by_prefix[self.prefix] = self._readers[self.writer.fingerprint]
            self._id_versions[schema_id] = self.writer

    def encode(self, record: Mapping[str, Any]) -> bytes:
        try:
            return self.prefix + self._write(record)
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
            (HEADER_CONTENT_TYPE, self._content_type),
        ]

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:1] == confluent.MAGIC:
            schema_id, body = confluent.split(data)
            read = self._by_id.get(schema_id) or self._learn_id(schema_id)
            where = f"schema id {schema_id}"
        else:
            fp, body = split_frame(data)
            read = self._readers.get(fp) or self._learn(fp)
            where = f"writer fingerprint {fp.hex()}"
        try:
            record: dict[str, Any] = read(body)
        except TrailingBytesError as exc:
            raise TruncatedRecordError(
                f"Avro body of {len(body)} bytes has {exc}: corrupt or wrongly framed ({where})"
            ) from exc
        except READ_ERRORS as exc:
            raise TruncatedRecordError(
                f"Avro body of {len(body)} bytes is truncated or corrupt ({where}): {exc!r}"
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
        self._misses[fp] = time.monotonic() + MISS_SECONDS  # do not ask again for every record
        raise UnknownFingerprintError(fp.hex(), self._known)

    def _learn_id(self, schema_id: int) -> Reader:
        """The reader of a registry id first seen: asked of the registry once, then cached."""
        if schema_id in self._foreign:
            raise ForeignSchemaError(schema_id, self._foreign[schema_id])
        if self._resolve_id is None:
            raise UnknownSchemaIdError(
                schema_id, "no schema registry is configured to look it up (CONVMETRICS_SCHEMA_REGISTRY_URL)"
            )
        if self._id_misses.get(schema_id, 0.0) > time.monotonic():
            raise UnknownSchemaIdError(schema_id, "the schema registry does not know it")
        raw = self._resolve_id(schema_id)
        if raw is None:
            self._id_misses[schema_id] = time.monotonic() + MISS_SECONDS
            raise UnknownSchemaIdError(schema_id, "the schema registry does not know it")
        read = self._reader_of(schema_id, raw)
        self._by_id[schema_id] = self._by_prefix[confluent.prefix(schema_id)] = read
        return read

    def _reader_of(self, schema_id: int, raw: Any) -> Reader:
        """The reader for a registry schema if it is ours (a shipped version, or a newer one
        of the same record that resolves into our reader), else ForeignSchemaError."""
        name = full_name(raw)
        if name != self._name:
            why = f"it is {name or 'an unnamed schema'}, not {self._name} ({self.subject.name})"
        else:
            fp = fingerprint_of(raw)
            for v in self.subject.versions:
                if v.fingerprint == fp:
                    self._id_versions[schema_id] = v
                    return self._readers[fp]
            problems: list[object] = list(incompatibilities(raw, dict(self._reader_raw)))
            if not problems:
                try:
                    return make_reader(raw, None if raw == self._reader_raw else self._reader_raw)
                except Exception as exc:  # fastavro/cavro refuse the pair after all
                    problems = [exc]
            why = f"it cannot be read as {self.subject.name}: {'; '.join(map(str, problems))}"
        self._foreign[schema_id] = why
        raise ForeignSchemaError(schema_id, why)

    def decode_many(self, values: list[bytes]) -> list[dict[str, Any] | DecodeError]:
        """Decode a batch; each item is the record or the DecodeError for that value."""
        out: list[dict[str, Any] | DecodeError] = []
        append, decode, readers, by_prefix = out.append, self.decode, self._readers, self._by_prefix
        for value in values:
            # fast path: a known writer and a sound body; anything else takes `decode`,
            # which names the error (and asks the registry about an id first seen)
            if value.startswith(MAGIC) and len(value) > HEADER_SIZE:
                read = readers.get(value[2:HEADER_SIZE])
                if read is not None:
                    try:
                        append(read(value[HEADER_SIZE:]))
                        continue
                    except READ_ERRORS:
                        pass
            else:  # a Confluent head (00 + id) of a known id: one slice, one dict lookup
                read = by_prefix.get(value[:5])
                if read is not None and len(value) > 5:
                    try:
                        append(read(value[5:]))
                        continue
                    except READ_ERRORS:
                        pass
            try:
                append(decode(value))
            except DecodeError as exc:
                append(exc)
        return out

    def version_of(self, data: bytes) -> SchemaVersion:
        """The shipped writer version of a framed record (of either framing)."""
        if data[:1] == confluent.MAGIC:
            schema_id, _ = confluent.split(data)
            if schema_id not in self._by_id:
                self._learn_id(schema_id)
            if schema_id in self._id_versions:
                return self._id_versions[schema_id]
            why = f"it is not a version of {self.subject.name} this build ships"
            raise UnknownSchemaIdError(schema_id, why)
        fp, _ = split_frame(data)
        for v in self.subject.versions:
            if v.fingerprint == fp:
                return v
        raise UnknownFingerprintError(fp.hex(), self._known)
