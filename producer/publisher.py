"""`EventPublisher`: one shared idempotent Kafka producer for many concurrent requests.

A background thread polls the producer; the delivery reports of one poll are handed to
the event loop in one ``call_soon_threadsafe`` and resolve the futures the requests
wait on. `submit` is synchronous, so writes submitted in order reach one partition in
order (idempotence keeps that order across retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producer.exceptions import BrokerUnavailableError, DeliveryError, DeliveryTimeoutError

log = logging.getLogger(__name__)

#: How long one poll blocks when no report is due (bounds the shutdown latency).
POLL_SECONDS = 0.05
#: Grace added to the asyncio wait over librdkafka's own message timeout.
WAIT_MARGIN = 1.0

Delivered = tuple[int, int]
_Report = tuple["asyncio.Future[Delivered]", KafkaError | None, int, int, float]


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
    def submit(
        self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[Delivered]:
        """Hand one write to the producer now; the future resolves to (partition, offset).

        Raises:
            BrokerUnavailableError: shutting down, fatal producer error or full queue.
        """
        if self._closed:
            raise BrokerUnavailableError("gateway is shutting down", retry_after=self.retry_after)
        if self._fatal is not None:
            raise BrokerUnavailableError(
                f"Kafka producer failed: {self._fatal}", retry_after=self.retry_after
            )
        assert self._loop is not None, "EventPublisher.start() was not called"
        future: asyncio.Future[Delivered] = self._loop.create_future()
        started = time.perf_counter()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            # Runs in the poll thread, which alone swaps self._reports: no lock needed.
            latency = time.perf_counter() - started
            self._reports.append((future, err, msg.partition() or 0, msg.offset() or 0, latency))

        try:
            self._producer.produce(self.topic, value, key, headers=list(headers), on_delivery=on_delivery)
        except BufferError:
            raise BrokerUnavailableError(
                "Kafka producer queue is full (broker slow or unreachable)", retry_after=self.retry_after
            ) from None
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"Kafka refused the write: {exc}", retry_after=self.retry_after
            ) from None
        return future

    async def wait(self, future: asyncio.Future[Delivered]) -> Delivered:
        """Wait for one submitted write, bounded by the delivery timeout.

        Raises:
            DeliveryTimeoutError: no acknowledgement in time.
            DeliveryError: the broker (or librdkafka) reported a failed delivery.
        """
        try:
            async with asyncio.timeout(self.delivery_timeout + WAIT_MARGIN):
                return await future
        except TimeoutError:
            raise self.timeout_error() from None

    async def wait_all(self, futures: Sequence[asyncio.Future[Delivered]]) -> None:
        """Wait for many submitted writes at once; the ones still pending are cancelled.

        Afterwards every future is done: a result, a `DeliveryError`, or cancelled
        (no acknowledgement within the delivery timeout: see `timeout_error`).
        """
        if futures:
            _, pending = await asyncio.wait(futures, timeout=self.delivery_timeout + WAIT_MARGIN)
            for future in pending:
                future.cancel()

    def timeout_error(self) -> DeliveryTimeoutError:
        """The error of a write that got no acknowledgement in time."""
        return DeliveryTimeoutError(
            f"no acknowledgement from Kafka within {self.delivery_timeout:g} s", retry_after=self.retry_after
        )

    async def publish(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> Delivered:
        """Write one event and return its (partition, offset) once acked by the broker."""
        return await self.wait(self.submit(key, value, headers))

    # -- health ----------------------------------------------------------------------
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
            log.warning("Kafka: %s", err.str())


def _resolve(batch: list[_Report], retry_after: int, observe: Callable[[float], None] | None) -> None:
    for future, err, partition, offset, latency in batch:
        if err is None and observe is not None:
            observe(latency)
        if future.done():
            continue
        if err is None:
            future.set_result((partition, offset))
        elif err.code() == KafkaError._MSG_TIMED_OUT:
            future.set_exception(
                DeliveryTimeoutError(
                    f"Kafka did not acknowledge in time: {err.str()}", retry_after=retry_after
                )
            )
        else:
            future.set_exception(
                DeliveryError(f"Kafka delivery failed: {err.str()}", retry_after=retry_after)
            )
