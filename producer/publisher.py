"""`EventPublisher`: one shared idempotent Kafka producer for many concurrent requests.

A background thread polls the producer; the delivery reports of one poll are handed to
the event loop in one ``call_soon_threadsafe``. A request's writes (one, or a whole
batch) share one `Writes`, whose one future resolves when the last of them is answered:
no future or wake-up per event. `submit` is synchronous, so writes submitted
in order reach one partition in order (idempotence keeps that order across retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producer.exceptions import BrokerUnavailableError, DeliveryError, DeliveryTimeoutError
from schemas.kafka import ErrorReport

log = logging.getLogger(__name__)

#: How long one poll blocks when no report is due (bounds the shutdown latency).
POLL_SECONDS = 0.05
#: Grace added to the asyncio wait over librdkafka's own message timeout.
WAIT_MARGIN = 1.0

Delivered = tuple[int, int]


class Writes:
    """The writes of one request, answered together: one future for all of them.

    Touched only on the event loop (submits there, delivery reports handed over to it).
    """

    __slots__ = ("done", "left", "outcomes", "sealed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: per slot: None until Kafka answered, then (partition, offset) or the error
        self.outcomes: list[Delivered | DeliveryError | None] = []
        self.left = 0  # submitted and not answered yet
        self.sealed = False  # no more submits: `done` resolves when `left` reaches 0
        self.done: asyncio.Future[None] = loop.create_future()


_Report = tuple[Writes, int, KafkaError | None, int, int, float]
_Headers = list[tuple[str, str | bytes | None]]


class EventPublisher:
    """Publishes encoded events and answers, per write, only once the broker acked it.

    Args:
        config: librdkafka settings (``message.timeout.ms`` bounds each delivery).
        topic: the topic every event goes to.
        delivery_timeout: seconds a caller waits before `DeliveryTimeoutError`.
        retry_after: Retry-After seconds carried by the `DeliveryError` raised.
        observe: called on the event loop with the seconds from submit to ack of
            every acknowledged write (the produce latency histogram).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        *,
        delivery_timeout: float,
        retry_after: int = 5,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.topic = topic
        self.observe = observe
        self.delivery_timeout = delivery_timeout
        self.retry_after = retry_after
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[_Report] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fatal: str | None = None
        self._closed = False
        #: Kafka's errors, logged at most once a minute each; refused credentials and failed
        #: TLS named as such (the readiness answer shows the latest)
        self.errors = ErrorReport(log)

    # -- lifecycle -------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the event loop whose futures delivery reports resolve; start polling."""
        self._loop = loop
        self._thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> int:
        """Refuse new writes, wait for outstanding ones (reports still resolve), stop.

        Returns:
            The number of messages still undelivered after ``timeout``.
        """
        self._closed = True
        deadline = time.monotonic() + timeout
        while len(self._producer) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)  # the poll thread serves the reports meanwhile
        left = len(self._producer) if self._thread else self._producer.flush(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return left

    # -- writes ----------------------------------------------------------------------
    def open(self) -> Writes:
        """A group of writes (one request's) to `submit` to and then `wait` for."""
        assert self._loop is not None, "EventPublisher.start() was not called"
        return Writes(self._loop)

    def submit(self, writes: Writes, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
        """Hand one write to the producer now; return its slot in ``writes.outcomes``.

        Raises:
            BrokerUnavailableError: shutting down, fatal producer error or full queue.
        """
        if self._closed:
            raise BrokerUnavailableError("gateway is shutting down", retry_after=self.retry_after)
        if self._fatal is not None:
            raise BrokerUnavailableError(
                f"Kafka producer failed: {self._fatal}", retry_after=self.retry_after
            )
        slot = len(writes.outcomes)

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            # Runs in the poll thread, which alone swaps self._reports: no lock needed.
            # latency(): librdkafka's own time from produce() to the acknowledgement
            report = (writes, slot, err, msg.partition() or 0, msg.offset() or 0, msg.latency() or 0.0)
            self._reports.append(report)

        try:
            self._producer.produce(
                self.topic, value, key, headers=cast(_Headers, headers), on_delivery=on_delivery
            )
        except BufferError:
            raise BrokerUnavailableError(
                "Kafka producer queue is full (broker slow or unreachable)", retry_after=self.retry_after
            ) from None
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"Kafka refused the write: {exc}", retry_after=self.retry_after
            ) from None
        writes.outcomes.append(None)
        writes.left += 1
        return slot

    async def wait(self, writes: Writes) -> list[Delivered | DeliveryError]:
        """Wait, bounded by the delivery timeout, until Kafka answered every write submitted.

        Returns:
            One outcome per slot: (partition, offset) once acknowledged, the
            `DeliveryError` Kafka reported, or `timeout_error` when no answer came in time.
        """
        writes.sealed = True
        if writes.left:
            try:
                async with asyncio.timeout(self.delivery_timeout + WAIT_MARGIN):
                    await writes.done
            except TimeoutError:
                pass
        timeout = None
        outcomes: list[Delivered | DeliveryError] = []
        for outcome in writes.outcomes:
            if outcome is None:
                outcome = timeout = timeout or self.timeout_error()
            outcomes.append(outcome)
        return outcomes

    def timeout_error(self) -> DeliveryTimeoutError:
        """The error of a write that got no acknowledgement in time."""
        return DeliveryTimeoutError(
            f"no acknowledgement from Kafka within {self.delivery_timeout:g} s", retry_after=self.retry_after
        )

    async def publish(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Delivered:
        """Write one event and return its (partition, offset) once acked by the broker.

        Raises:
            BrokerUnavailableError: the producer refused the write.
            DeliveryError: Kafka reported a failed delivery, or none in time.
        """
        writes = self.open()
        self.submit(writes, key, value, headers)
        (outcome,) = await self.wait(writes)
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    # -- health ----------------------------------------------------------------------
    @property
    def fatal(self) -> str | None:
        """librdkafka's fatal error, if one came: this producer writes nothing again (an
        idempotent producer fenced or out of sequence); only a new process recovers."""
        return self._fatal

    def broker_reachable(self, timeout: float = 2.0) -> bool:
        """Whether the cluster answers a metadata request for the topic (blocking)."""
        try:
            meta = self._producer.list_topics(self.topic, timeout=timeout)
        except KafkaException:
            return False
        topic = meta.topics.get(self.topic)
        return bool(meta.brokers) and topic is not None and topic.error is None

    # -- poll thread -----------------------------------------------------------------
    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_SECONDS)
            if self._reports:
                batch, self._reports = self._reports, []
                self._hand_over(batch)

    def _hand_over(self, batch: list[_Report]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody waits any more
            self._loop.call_soon_threadsafe(_resolve, batch, self.retry_after, self.observe)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("fatal Kafka producer error: %s", err.str())
        else:
            self.errors(err)


def _resolve(batch: list[_Report], retry_after: int, observe: Callable[[float], None] | None) -> None:
    for writes, slot, err, partition, offset, latency in batch:
        if err is None:
            if observe is not None:
                observe(latency)
            writes.outcomes[slot] = (partition, offset)
        elif err.code() == KafkaError._MSG_TIMED_OUT:
            writes.outcomes[slot] = DeliveryTimeoutError(
                f"Kafka did not acknowledge in time: {err.str()}", retry_after=retry_after
            )
        else:
            writes.outcomes[slot] = DeliveryError(
                f"Kafka delivery failed: {err.str()}", retry_after=retry_after
            )
        writes.left -= 1
        if not writes.left and writes.sealed and not writes.done.done():
            writes.done.set_result(None)
