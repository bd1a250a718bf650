"""Dead-letter records: the original key, value and headers, plus why and where from."""

from __future__ import annotations

from typing import Any

H_ERROR = "convmetrics-dlq-error"
H_ERROR_TYPE = "convmetrics-dlq-error-type"
H_TOPIC = "convmetrics-dlq-source-topic"
H_PARTITION = "convmetrics-dlq-source-partition"
H_OFFSET = "convmetrics-dlq-source-offset"
DLQ_HEADERS = (H_ERROR, H_ERROR_TYPE, H_TOPIC, H_PARTITION, H_OFFSET)


def dead_letter_headers(
    original: Any, error: Exception, topic: str, partition: int, offset: int
) -> list[tuple[str, Any]]:
    return [
        *(original or []),
        (H_ERROR, str(error).encode()),
        (H_ERROR_TYPE, type(error).__name__.encode()),
        (H_TOPIC, topic.encode()),
        (H_PARTITION, str(partition).encode()),
        (H_OFFSET, str(offset).encode()),
    ]


def original_headers(headers: Any) -> list[tuple[str, Any]]:
    """Headers of a DLQ record without the ones the DLQ added (for replay)."""
    return [(k, v) for k, v in headers or [] if k not in DLQ_HEADERS]


def source_of(headers: Any) -> tuple[str, int, int] | None:
    found = {k: v for k, v in headers or [] if k in DLQ_HEADERS}
    try:
        return (
            bytes(found[H_TOPIC]).decode(),
            int(bytes(found[H_PARTITION])),
            int(bytes(found[H_OFFSET])),
        )
    except (KeyError, ValueError):
        return None
