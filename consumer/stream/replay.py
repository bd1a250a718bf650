"""`convmetrics dlq replay`: dead-lettered records back to their source topic."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.exceptions import ConfigError, ConsumerError
from consumer.stream.dlq import original_headers, source_of
from schemas import codec, confluent
from schemas.confluent import WireFormat
from schemas.exceptions import RegistryError
from schemas.kafka import DeliveryErrors, client_config, close_consumer, unreachable
from schemas.registry import SchemaVersion, subject, subject_names
from schemas.schema_registry import RegistryClient, RegistrySettings

log = logging.getLogger(__name__)


class Reframer:
    """`dlq replay --wire-format confluent`: a single-object record of a shipped version gets
    the Confluent head (its id under `<topic>-value`, looked up once per topic and version);
    the body stays. Confluent records, and records this build cannot place, go back as
    they came (the consumer reads both framings)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._versions: dict[bytes, SchemaVersion] = {
            v.fingerprint: v for name in subject_names() for v in subject(name).versions
        }
        self._ids: dict[tuple[str, bytes], int] = {}

    def __call__(
        self, topic: str, value: bytes, headers: list[tuple[str, Any]]
    ) -> tuple[bytes, list[tuple[str, Any]]]:
        if not value.startswith(codec.MAGIC) or len(value) < codec.HEADER_SIZE:
            return value, headers
        fp = value[2 : codec.HEADER_SIZE]
        version = self._versions.get(fp)
        if version is None:
            return value, headers
        schema_id = self._ids.get((topic, fp))
        if schema_id is None:
            schema_id = self._ids[(topic, fp)] = self.client.schema_id(topic, version)
        headers = [(k, confluent.CONTENT_TYPE if k == codec.HEADER_CONTENT_TYPE else v) for k, v in headers]
        return confluent.frame(schema_id, value[codec.HEADER_SIZE :]), headers


def replay_dead_letters(
    bootstrap: str,
    topic: str,
    *,
    group: str,
    idle_timeout: float = 5.0,
    kafka: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
    wire_format: WireFormat = WireFormat.SINGLE_OBJECT,
    registry: RegistrySettings | None = None,
    progress_every: float = 5.0,
) -> tuple[int, int]:
    """Replay `<topic>.dlq` into the source topics, up to its end as it is at the start;
    returns (replayed, skipped).

    Records dead-lettered after the start are left for the next replay: while the cause is
    still there (a consumer that refuses them again), replaying them too would never end and
    copy them over and over. `idle_timeout` ends it earlier when records before that end do
    not come. Progress is the replay group's committed offset, committed only after the
    producer acknowledged everything before it, so an interrupted replay resumes without
    loss; a line is logged every `progress_every` seconds. With the Confluent
    `wire_format`, single-object records are reframed (`Reframer`).
    """
    reframe = None
    if wire_format is WireFormat.CONFLUENT:
        if registry is None:
            raise ConfigError("--wire-format confluent needs --schema-registry-url (or its variable)")
        try:
            reframe = Reframer(RegistryClient(registry))
        except RegistryError as exc:
            raise ConfigError(str(exc)) from None
    dlq = f"{topic}.dlq"
    consumer = Consumer(
        client_config(
            bootstrap, kafka, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
    )
    replayed = skipped = 0
    try:
        try:  # a one-shot command: an unreachable cluster is an error, not "0 replayed"
            ends = _ends(consumer, dlq, connect_timeout)
        except KafkaException as exc:
            raise ConsumerError(unreachable(bootstrap, connect_timeout, exc)) from None
        total = sum(end - start for start, end in ends.values())
        left = {p for p, (start, end) in ends.items() if start < end}
        if not left:
            return 0, 0
        log.info("replaying %s record(s) of %s (its end at the start)", f"{total:,}", dlq)
        # made only now: a producer made before the check would still be logging its own
        # connection failures after the error line above
        producer = Producer(client_config(bootstrap, kafka, acks="all", enable_idempotence=True))
        consumer.subscribe([dlq])
        refused = DeliveryErrors()
        last_seen = last_said = time.monotonic()
        while left and time.monotonic() - last_seen < idle_timeout:
            msgs = consumer.consume(1000, 0.5)
            if not msgs:
                continue
            last_seen = time.monotonic()
            done: dict[int, int] = {}  # partition -> the next offset, of what this batch replayed
            for m in msgs:
                if m.error():
                    log.warning("%s: %s", dlq, m.error())
                    continue
                p, offset = m.partition(), m.offset()
                if p is None or offset is None or p not in left or offset >= ends[p][1]:
                    continue  # dead-lettered after the start
                done[p] = offset + 1
                src = source_of(m.headers())
                if src is None:
                    skipped += 1
                    continue
                value, headers = m.value() or b"", original_headers(m.headers())
                if reframe is not None:
                    value, headers = reframe(src[0], value, headers)
                producer.produce(src[0], key=m.key(), value=value, headers=headers, on_delivery=refused)
                replayed += 1
            if producer.flush(30):
                raise ConsumerError(
                    "the source topic did not acknowledge replayed records; nothing committed"
                )
            if errors := refused.errors:  # a delivery error is no acknowledgement: the DLQ keeps them
                raise ConsumerError(
                    f"the source topic refused {len(errors)} replayed record(s) ({errors[0]}); "
                    "nothing committed: they stay in the DLQ for the next replay"
                )
            if done:
                consumer.commit(
                    offsets=[TopicPartition(dlq, p, n) for p, n in done.items()], asynchronous=False
                )
            for p, n in done.items():
                if n >= ends[p][1]:
                    left.discard(p)
                    consumer.pause([TopicPartition(dlq, p)])
            if time.monotonic() - last_said >= progress_every:
                last_said = time.monotonic()
                log.info("replayed %s of %s record(s)", f"{replayed + skipped:,}", f"{total:,}")
        if left:
            log.warning(
                "%s: no record for %g s before its end at the start; stopped (partitions %s)",
                dlq, idle_timeout, sorted(left),
            )  # fmt: skip
    finally:
        close_consumer(consumer)
    return replayed, skipped


#: a group coordinator a cluster has not elected or loaded yet (a cluster just started)
_COORDINATOR_NOT_YET = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


def _ends(consumer: Consumer, dlq: str, timeout: float) -> dict[int, tuple[int, int]]:
    """Each partition of `dlq`: (where the replay group starts, its end now); none when the
    topic is not there (nothing was ever dead-lettered)."""
    meta = consumer.list_topics(dlq, timeout=timeout).topics.get(dlq)
    if meta is None or meta.error is not None or not meta.partitions:
        return {}
    parts = [TopicPartition(dlq, p) for p in sorted(meta.partitions)]
    deadline = time.monotonic() + timeout
    while True:  # a cluster just started has no group coordinator yet (NOT_COORDINATOR: retriable)
        try:
            found = consumer.committed(parts, timeout=max(0.1, deadline - time.monotonic()))
            break
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            again = isinstance(err, KafkaError) and (err.retriable() or err.code() in _COORDINATOR_NOT_YET)
            if not again or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    committed = {tp.partition: tp.offset for tp in found}
    out: dict[int, tuple[int, int]] = {}
    for tp in parts:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        start = committed.get(tp.partition, -1)
        out[tp.partition] = (max(start, low) if start >= 0 else low, high)
    return out
