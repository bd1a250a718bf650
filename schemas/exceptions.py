"""Errors of the Avro contract. `SchemaError` is the root; each names what was wrong."""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by `schemas`."""


class DecodeError(SchemaError):
    """Bytes that are not a readable single-object-encoded record."""


class BadMagicError(DecodeError):
    """The first two bytes are not the Avro single-object marker C3 01."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        super().__init__(
            f"not an Avro single-object record: expected marker c301, got {head.hex() or 'nothing'}"
        )


class TruncatedRecordError(DecodeError):
    """The header or the Avro body ends before the record does (or has bytes left over)."""


class UnknownFingerprintError(DecodeError):
    """A writer schema this code does not ship: typically a record from a newer producer."""

    def __init__(self, fingerprint: str, known: list[str]) -> None:
        self.fingerprint = fingerprint
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint} (CRC-64-AVRO); this build knows "
            f"{', '.join(known)}: upgrade convmetrics to read records from newer producers"
        )


class EncodeError(SchemaError):
    """A record that does not fit the writer schema."""


class ContractError(SchemaError):
    """The schema folder itself is wrong: unreadable, unpinned, changed or incompatible."""
