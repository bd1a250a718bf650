"""``convmetrics produce FILE``'s core: webhooks from a file to Kafka without HTTP.

Same rules as ``POST /webhooks`` (`intake.prepare`), same durable producer settings;
the file is read line by line when it is NDJSON, so its size is not bounded by memory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, Message, Producer

from producer.batch import Item, iter_ndjson, parse_batch
from producer.exceptions import GatewayError
from producer.intake import Ignored, prepare
from producer.settings import GatewaySettings
from producer.topics import check_key, ensure_topic
from schemas.exceptions import SchemaError
from schemas.topic_registry import SCHEMA_TOPIC, publish_schemas

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One item of the file that was not produced, and why."""

    index: int
    line: int
    id: str | None
    status: int
    reason: str


@dataclass(slots=True)
class Summary:
    """What happened to every item of the file."""

    items: int = 0
    produced: int = 0
    ignored: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    #: stopped (Ctrl-C, SIGTERM) before the end of the file: what was read is accounted for
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        return not self.rejected and self.interrupted is None


def read_items(path: Path | str) -> Iterator[Item]:
    """Items of a JSON-array or NDJSON file (``-`` reads standard input)."""
    with _open(path) as fh:
        head = fh.read(64)
        if head.lstrip().startswith(b"["):
            yield from parse_batch(head + fh.read())
            return
        lines = io.BytesIO(head + fh.readline())
        yield from iter_ndjson(_chain(lines, fh))


def count_lines(path: Path | str) -> int | None:
    """Non-blank lines of an NDJSON file (a progress total); None for stdin or a JSON array."""
    if str(path) == "-":
        return None
    with open(path, "rb") as fh:
        if fh.read(64).lstrip().startswith(b"["):
            return None
        fh.seek(0)
        return sum(1 for line in fh if line.strip())


def produce_file(
    path: Path | str,
    settings: GatewaySettings,
    *,
    on_item: Callable[[Summary], None] | None = None,
    poll_every: int = 1000,
) -> Summary:
    """Validate, encode and produce every webhook of ``path``; return the summary.

    Items are produced as they are read and the call returns once every write was
    acknowledged or failed (``settings.delivery_timeout`` bounds each one). The topic is
    created first where it is missing, with ``settings.partitions`` and
    ``settings.replication_factor``, as the gateway does (a broker would otherwise
    auto-create it with its own defaults: one partition).

    Raises:
        TopicError: the topic is missing and could not be created.
        KeyMismatchError: the topic holds events keyed otherwise than ``settings.key_by``.
        SettingsError: the Confluent wire format without its schema in the registry.
    """
    if settings.create_topic:
        ensure_topic(
            settings.bootstrap_servers,
            settings.topic,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            kafka=settings.kafka,
        )
    check_key(settings.bootstrap_servers, settings.topic, settings.key_by, kafka=settings.kafka)
    codec = settings.writer_codec()
    # as the gateway does: a reader older than this build resolves the records from Kafka
    try:
        publish_schemas(settings.bootstrap_servers, codec.subject, kafka=settings.kafka, timeout=10)
    except SchemaError as exc:  # the events still count; only older readers dead-letter them
        log.warning("%s: readers older than this build cannot look its schemas up in %s", exc, SCHEMA_TOPIC)
    producer = Producer(settings.producer_config())
    summary = Summary()
    pending: dict[int, Item] = {}

    def delivered(item: Item, event_id: str) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, _msg: Message) -> None:
            pending.pop(item.index, None)
            if err is None:
                summary.produced += 1
            else:
                summary.rejected.append(
                    Rejection(item.index, item.line, event_id, 503, f"Kafka: {err.str()}")
                )
            if on_item:
                on_item(summary)

        return report

    try:
        for item in read_items(path):
            summary.items += 1
            try:
                if item.error is not None:
                    raise item.error
                prepared = prepare(
                    item.body, codec, received_at_millis=time.time_ns() // 1_000_000, key_by=settings.key_by
                )
            except GatewayError as exc:
                summary.rejected.append(
                    Rejection(item.index, item.line, _id_of(item.body), exc.status, str(exc))
                )
                if on_item:
                    on_item(summary)
                continue
            if isinstance(prepared, Ignored):
                summary.ignored += 1
                if on_item:
                    on_item(summary)
                continue
            pending[item.index] = item
            _produce(producer, settings.topic, prepared.key, prepared.value, list(prepared.headers),
                     delivered(item, prepared.id))  # fmt: skip
            if summary.items % poll_every == 0:
                producer.poll(0)
    except KeyboardInterrupt as why:  # Ctrl-C, or SIGTERM (`convmetrics.cli`): what was read still lands
        summary.interrupted = str(why) or "SIGINT"
        # an item stopped half-way (neither handed to Kafka nor refused) counts as not read
        # (no delivery report runs outside poll and flush, on this thread)
        summary.items = len(pending) + summary.produced + summary.ignored + len(summary.rejected)
    producer.flush(settings.delivery_timeout + 5)
    for item in pending.values():  # never reported: count as failed, so the exit code says so
        body_id = _id_of(item.body)
        summary.rejected.append(
            Rejection(item.index, item.line, body_id, 503, "no delivery report from Kafka")
        )
    summary.rejected.sort(key=lambda r: r.index)
    return summary


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, headers: list[tuple[str, str | bytes | None]],
    callback: Callable[[KafkaError | None, Message], None],
) -> None:  # fmt: skip
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, on_delivery=callback)
            return
        except BufferError:  # local queue full: let deliveries drain it
            producer.poll(0.1)


def _id_of(body: Any) -> str | None:
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


@contextlib.contextmanager
def _open(path: Path | str) -> Iterator[IO[bytes]]:
    if str(path) == "-":
        import sys

        yield sys.stdin.buffer
    else:
        with open(path, "rb") as fh:
            yield fh


def _chain(first: IO[bytes], rest: IO[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest
