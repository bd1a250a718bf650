"""Avro single-object framing: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + Avro body.

The writer schema is found by fingerprint among the versions shipped in `schemas/`, and
the body is resolved into one reader schema (by default the subject's latest version).
Unions of records come back as ``(full record name, record)`` tuples where a union holds
more than one record (the participants' ChannelUser/AppUser), which is also the shape
`encode` takes, so values round-trip unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any

import fastavro
from fastavro import schemaless_reader, schemaless_writer

from schemas.blocks import container_header, read_block
from schemas.exceptions import (
    BadMagicError,
    DecodeError,
    EncodeError,
    TruncatedRecordError,
    UnknownFingerprintError,
)
from schemas.registry import SchemaVersion, Subject

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10  # magic (2) + fingerprint (8)

HEADER_EVENT_TYPE = "convmetrics-event-type"
HEADER_SUBJECT = "convmetrics-schema-subject"
HEADER_VERSION = "convmetrics-schema-version"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE = b"application/vnd.apache.avro+binary; framing=single-object"


def frame(version: SchemaVersion, body: bytes) -> bytes:
    return MAGIC + version.fingerprint + body


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
        reader_schema: parsed reader schema for `decode` (default: latest version). A
            projection (a subset of fields) is allowed and makes decoding cheaper.
    """

    def __init__(
        self,
        subject: Subject,
        *,
        writer_version: int | None = None,
        reader_schema: Any = None,
    ) -> None:
        self.subject = subject
        self.writer = subject.latest if writer_version is None else subject.version(writer_version)
        reader = subject.latest.parsed if reader_schema is None else reader_schema
        self._headers = {v.fingerprint: container_header(v) for v in subject.versions}
        self._known = [v.fingerprint_hex for v in subject.versions]
        # fingerprint -> (writer schema, reader schema or None when identical)
        self._resolve: dict[bytes, tuple[Any, Any]] = {
            v.fingerprint: (v.parsed, None if v.parsed is reader else reader) for v in subject.versions
        }

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = BytesIO()
        buf.write(MAGIC)
        buf.write(self.writer.fingerprint)
        try:
            schemaless_writer(buf, self.writer.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(
                f"record does not fit {self.subject.name} v{self.writer.version}: {exc}"
            ) from exc
        return buf.getvalue()

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
        try:
            writer, reader = self._resolve[fp]
        except KeyError:
            raise UnknownFingerprintError(fp.hex(), self._known) from None
        buf = BytesIO(body)
        try:
            record: Any = schemaless_reader(
                buf, writer, reader, return_record_name=True, return_record_name_override=True
            )
        except (EOFError, IndexError, ValueError, UnicodeDecodeError, MemoryError) as exc:
            raise TruncatedRecordError(
                f"Avro body of {len(body)} bytes is truncated or corrupt "
                f"(writer fingerprint {fp.hex()}): {exc!r}"
            ) from exc
        if buf.tell() != len(body):
            raise TruncatedRecordError(
                f"Avro body has {len(body) - buf.tell()} trailing bytes after the record "
                f"(writer fingerprint {fp.hex()}): corrupt or wrongly framed"
            )
        return record  # type: ignore[no-any-return]

    def decode_many(self, values: list[bytes]) -> list[dict[str, Any] | DecodeError]:
        """Decode a batch; each item is the record or the DecodeError for that value.

        Runs of records with one writer schema are decoded as one block (see
        `schemas.blocks`); a run that fails is decoded record by record instead.
        """
        out: list[dict[str, Any] | DecodeError] = [None] * len(values)  # type: ignore[list-item]
        run_fp: bytes | None = None
        run: list[int] = []
        bodies: list[memoryview] = []

        def flush() -> None:
            if not run:
                return
            try:
                assert run_fp is not None
                records = read_block(self._headers[run_fp], bodies, self._resolve[run_fp][1])
            except Exception:  # any failure: find the culprit record by record
                for i in run:
                    out[i] = self._decode_or_error(values[i])
            else:
                for i, rec in zip(run, records, strict=True):
                    out[i] = rec
            run.clear()
            bodies.clear()

        for i, value in enumerate(values):
            try:
                fp, body = split_frame(value)
                if fp not in self._resolve:
                    raise UnknownFingerprintError(fp.hex(), self._known)
            except DecodeError as exc:
                flush()
                out[i] = exc
                continue
            if fp != run_fp:
                flush()
                run_fp = fp
            run.append(i)
            bodies.append(body)
        flush()
        return out

    def _decode_or_error(self, value: bytes) -> dict[str, Any] | DecodeError:
        try:
            return self.decode(value)
        except DecodeError as exc:
            return exc

    def version_of(self, data: bytes) -> SchemaVersion:
        """The shipped writer version of a framed record."""
        fp, _ = split_frame(data)
        for v in self.subject.versions:
            if v.fingerprint == fp:
                return v
        raise UnknownFingerprintError(fp.hex(), self._known)


def parse_reader_schema(schema: Mapping[str, Any]) -> Any:
    """Parse a (possibly projected) reader schema once, for `Codec(reader_schema=...)`."""
    return fastavro.parse_schema(dict(schema), _write_hint=False)
