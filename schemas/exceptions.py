"""Errors of the Avro contract. `SchemaError` is the root; each names what was wrong."""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by `schemas`."""


class DecodeError(SchemaError):
    """Bytes that are not a readable single-object-encoded record."""


class BadMagicError(DecodeError):
    """The record starts with neither the single-object marker C3 01 nor the Confluent 00."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        super().__init__(
            "not an Avro record in a known framing: expected marker c301 (single-object) or 00 "
            f"(Confluent), got {head.hex() or 'nothing'}"
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


class UnknownSchemaIdError(DecodeError):
    """A Confluent-framed record whose schema id cannot be looked up."""

    def __init__(self, schema_id: int, why: str) -> None:
        self.schema_id = schema_id
        super().__init__(f"Confluent-framed record with schema id {schema_id}: {why}")


class ForeignSchemaError(DecodeError):
    """A Confluent-framed record written with a registry schema that is not one of ours."""

    def __init__(self, schema_id: int, why: str) -> None:
        self.schema_id = schema_id
        super().__init__(f"Confluent-framed record with schema id {schema_id}, which is not ours: {why}")


class EncodeError(SchemaError):
    """A record that does not fit the writer schema."""


class ContractError(SchemaError):
    """The schema folder itself is wrong: unreadable, unpinned, changed or incompatible."""


class RegistryError(SchemaError):
    """The schema registry cannot be used as configured (the message says what to do)."""


class RegistrySettingsError(RegistryError):
    """A schema registry setting (its URL, its user info) that cannot be used."""


class RegistryUnavailableError(RegistryError):
    """The schema registry did not answer (down, unreachable, refused TLS or credentials)."""


class RegistryMismatchError(RegistryError):
    """The registry holds, under one of our subjects, a schema that is not one of ours."""


class SchemaNotRegisteredError(RegistryError):
    """The registry lacks the schema a writer needs (run `convmetrics schemas push`)."""


class TopicNotMadeError(SchemaError):
    """A topic that is missing and could not be made (`schemas.kafka.create_topic`);
    `unreachable`: the cluster did not answer, rather than refused it."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class ListenError(SchemaError):
    """A server's address cannot be listened on (a port in use, an address not this host's)."""
