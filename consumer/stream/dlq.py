"""Dead-letter records: the original key, value and headers, plus why and where from; and
the consumer's side of the dead-letter topic (`DeadLetters`)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumer.exceptions import ConsumerError

log = logging.getLogger(__name__)
#: dead letters said a line each per minute (`DeadLetters.send`)
SAID_PER_MINUTE = 20

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


class DeadLetters:
    """The consumer's producer to its dead-letter topic, and whether Kafka acknowledged every
    record sent to it: the store's offsets never move past a record that is in neither the
    metrics nor the dead-letter topic."""

    def __init__(self, producer: Producer, topic: str, ensure: Callable[[], None] | None = None) -> None:
        self.producer = producer
        self.topic = topic
        #: makes the topic where it is missing (a cluster that creates none on first use),
        #: once, before the first record: most consumers never dead-letter one
        self._ensure = ensure
        self._errors: list[str] = []
        #: why the topic refused a record: from then on nothing is committed (the commit on
        #: revocation, as the loop ends, included), so the store's offset stays before it
        self.failed: str | None = None
        #: a line per dead letter, the first SAID_PER_MINUTE of each minute; the rest counted
        #: by error and said in one line (a flood of bad records was a line each: 36,000)
        self._minute = time.monotonic()
        self._said = 0
        self._unsaid: Counter[str] = Counter()

    def send(self, m: Message, error: Exception, topic: str) -> None:
        """Produce `m` (its key, value and headers, and why) to the dead-letter topic; `topic`:
        the topic it came from, where the message does not say."""
        topic, partition, offset = m.topic() or topic, m.partition(), m.offset()
        assert partition is not None and offset is not None  # set on every consumed message
        self._say_unsaid()
        if self._said < SAID_PER_MINUTE:
            self._said += 1
            log.warning("dead-lettering %s[%d]@%d: %s", topic, partition, offset, error)
        else:
            self._unsaid[type(error).__name__] += 1
        if self._ensure is not None:
            try:
                self._ensure()
            except ConsumerError as exc:  # nothing is committed past this record
                self.failed = str(exc)
                raise
            self._ensure = None

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._errors.append(str(err))

        self.producer.produce(
            self.topic,
            key=m.key(),
            value=m.value(),
            headers=dead_letter_headers(m.headers(), error, topic, partition, offset),
            on_delivery=delivered,
        )
        self.producer.poll(0)

    def flush(self, timeout: float) -> int:
        """Deliver what is queued, for up to `timeout` s; how many records are left."""
        self._say_unsaid()
        return self.producer.flush(timeout)

    def _say_unsaid(self, every: float = 60.0) -> None:
        """Once a minute: the dead letters of the minute before that had no line of their own."""
        now = time.monotonic()
        if now - self._minute < every:
            return
        if self._unsaid:
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in self._unsaid.most_common())
            log.warning(
                "dead-lettered %s more record(s) in the last minute: %s", f"{self._unsaid.total():,}", kinds
            )
        self._minute, self._said, self._unsaid = now, 0, Counter()

    def confirm(self, timeout: float = 30) -> None:
        """Wait until Kafka acknowledged every record sent; else remember why (`failed`)
        and raise ConsumerError."""
        remaining = self.flush(timeout)
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            self.failed = (
                f"dead-letter topic {self.topic} did not acknowledge {remaining or len(errors)} "
                f"record(s) ({'; '.join(errors[:3])}): not committing past them"
            )
            raise ConsumerError(self.failed)
