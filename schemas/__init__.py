"""The Avro contract shared by the gateway and the consumer, and its codec."""

from schemas.codec import Codec
from schemas.exceptions import (
    BadMagicError,
    ContractError,
    DecodeError,
    EncodeError,
    ForeignSchemaError,
    SchemaError,
    TruncatedRecordError,
    UnknownFingerprintError,
    UnknownSchemaIdError,
)
from schemas.registry import SchemaVersion, Subject, subject

CONVERSATION_EVENT = "conversation_event"

__all__ = [
    "CONVERSATION_EVENT",
    "BadMagicError",
    "Codec",
    "ContractError",
    "DecodeError",
    "EncodeError",
    "ForeignSchemaError",
    "SchemaError",
    "SchemaVersion",
    "Subject",
    "TruncatedRecordError",
    "UnknownFingerprintError",
    "UnknownSchemaIdError",
    "conversation_codec",
    "subject",
]


def conversation_codec() -> Codec:
    """Codec for conversation events: writes and reads the latest shipped version."""
    return Codec(subject(CONVERSATION_EVENT))
