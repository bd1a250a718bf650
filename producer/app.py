"""The HTTP shell: Starlette routes around `intake.prepare` and `EventPublisher`.

Every answer is a promise to a sender that retries on anything but 2xx: a 202 is given
only once Kafka acknowledged the write (acks=all); anything that might succeed later is
503 with Retry-After; 410 is never answered (senders disable an endpoint on 410).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from confluent_kafka import KafkaException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from producer.batch import Item, parse_batch, parse_json
from producer.exceptions import (
    BodyTooLargeError,
    BrokerUnavailableError,
    DeliveryError,
    GatewayError,
    KeyMismatchError,
    WebhookValidationError,
)
from producer.intake import Ignored, Intake, Prepared
from producer.metrics import GatewayMetrics, MetricsMiddleware
from producer.openapi import openapi_document
from producer.publisher import Delivered, EventPublisher
from producer.settings import GatewaySettings
from producer.signature import verify_signature
from producer.topics import check_key, ensure_topic
from schemas import Codec, SchemaError
from schemas.topic_registry import publish_schemas

log = logging.getLogger(__name__)

#: gc.set_threshold while serving: collect the youngest generation after 200,000 new objects.
GC_THRESHOLDS = (200_000, 50, 100)
ROUTES = frozenset({"/webhooks", "/webhooks/batch", "/healthz", "/readyz", "/metrics", "/openapi.json"})


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(exc: GatewayError) -> Response:
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    headers: dict[str, str] = {}
    if isinstance(exc, WebhookValidationError):
        body["problems"] = [p.as_dict() for p in exc.problems]
    if isinstance(exc, DeliveryError):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, BodyTooLargeError):
        headers["Connection"] = "close"
    return json_response(body, exc.status, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it grows past ``limit`` (Content-Length may lie)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class Gateway:
    """Route handlers and the state they share (one codec, one publisher, one registry)."""

    def __init__(self, settings: GatewaySettings, publisher: EventPublisher | None = None) -> None:
        self.settings = settings
        self.keys = settings.signing_keys()
        self.codec: Codec = settings.writer_codec()  # Confluent: its schema id, looked up now
        self.intake = Intake(self.codec, settings.key_by)
        self.metrics = GatewayMetrics(ROUTES)
        self.publisher = publisher
        #: why the topic was refused (`topics.check_key`): said in every 503 until a restart
        self.refused: str | None = None
        self._openapi = orjson.dumps(openapi_document())
        #: the topic exists, its events are keyed as this gateway keys them, and the schemas
        #: are published: until then every write is a 503. With --no-create-topic the topic is
        #: someone else's to make: ready once its key is checked (`topics.check_key`), and the
        #: schemas are published meanwhile (older consumers read what this gateway writes)
        self.prepared = False
        self._preparing: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        s = self.settings
        if not self.keys:
            log.warning("no CONVMETRICS_WEBHOOK_SECRETS: unsigned webhooks are accepted")
        if self.publisher is None:
            self.publisher = EventPublisher(
                s.producer_config(),
                s.topic,
                delivery_timeout=s.delivery_timeout,
                retry_after=s.retry_after,
                observe=self.metrics.produce_latency.observe,
            )
        self.publisher.start(asyncio.get_running_loop())
        self._preparing = asyncio.create_task(self._prepare())
        gc.freeze()  # long-lived start-up objects leave the GC's view: shorter pauses under load
        # A batch holds ~50 short-lived containers per event until it is answered; at the
        # default threshold (700) they reach the older generations and get scanned again
        # and again: 10% of the batch endpoint's CPU. Almost all of it is freed by refcount.
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            if self._preparing is not None:
                self._preparing.cancel()
            left = await asyncio.to_thread(self.publisher.close, s.delivery_timeout + 5)
            log.info("gateway stopped; %d event(s) left undelivered", left)
            gc.set_threshold(*thresholds)

    async def _prepare(self, first_wait: float = 1.0, longest_wait: float = 30.0) -> None:
        """Create the topic (unless --no-create-topic), check that its events are keyed as
        this gateway keys them (`topics.check_key`) and publish the schemas, retried until
        Kafka takes them: the gateway runs meanwhile, not ready (503 + Retry-After) until the
        topic is there, and the log says why; where the schema topic refuses them (ACLs) it
        serves while they are retried (a warning). A topic keyed otherwise keeps it not ready."""
        s, wait = self.settings, first_wait
        said: str | None = None  # the cause last logged: each once, the retries at DEBUG

        def say(level: int, cause: str, retry: str) -> None:
            nonlocal said
            log.log(level if cause != said else logging.DEBUG, "%s; %s", cause, retry)
            said = cause

        while True:
            checked = False  # the events topic is there and keyed as this gateway keys
            try:
                if s.create_topic:
                    await asyncio.to_thread(
                        ensure_topic, s.bootstrap_servers, s.topic, partitions=s.partitions,
                        replication_factor=s.replication_factor, kafka=s.kafka, timeout=10,
                    )  # fmt: skip
                await asyncio.to_thread(
                    check_key, s.bootstrap_servers, s.topic, s.key_by, kafka=s.kafka, timeout=10
                )
                checked = True
                if not s.create_topic:  # someone else's topic: served while the schemas go out
                    self.prepared = True
                # so that consumers older than this gateway can read what it writes
                await asyncio.to_thread(
                    publish_schemas, s.bootstrap_servers, self.codec.subject, kafka=s.kafka, timeout=10
                )
            except KeyMismatchError as exc:  # not a passing state: not ready until restarted right
                self.prepared = False  # with --no-create-topic too: nothing is produced to it
                self.refused = str(exc)
                say(logging.ERROR, f"gateway not ready: {exc}", f"checked again every {longest_wait:g} s")
                await asyncio.sleep(longest_wait)
                continue
            except (GatewayError, SchemaError, KafkaException) as exc:
                cause = self.publisher.errors.last if self.publisher is not None else None
                why = f"{exc}{f'; {cause}' if cause else ''}"
                if checked and isinstance(exc, SchemaError):
                    # the schema topic refused (ACLs): the events count for every consumer of
                    # this build; a gateway held not ready for it would be for good
                    self.prepared = True
                if self.prepared:  # serving; only the schemas are missing
                    say(
                        logging.WARNING, f"schemas not published yet: {why}",
                        f"retrying up to every {longest_wait:g} s (consumers older than this gateway "
                        "cannot read its events until then)",
                    )  # fmt: skip
                else:
                    say(
                        logging.ERROR, f"gateway not ready: {why}",
                        f"retrying up to every {longest_wait:g} s (webhooks get 503 until then)",
                    )  # fmt: skip
                await asyncio.sleep(wait)
                wait = min(wait * 2, longest_wait)
                continue
            self.prepared, self.refused = True, None
            log.info("gateway ready: topic %s on %s", s.topic, s.bootstrap_servers)
            return

    def _not_ready(self) -> BrokerUnavailableError:
        if self.refused is not None:
            return BrokerUnavailableError(
                f"gateway not ready: {self.refused}", retry_after=self.settings.retry_after
            )
        cause = self.publisher.errors.last if self.publisher is not None else None
        return BrokerUnavailableError(
            f"gateway not ready: topic {self.settings.topic} not prepared on Kafka at "
            f"{self.settings.bootstrap_servers}" + (f" ({cause})" if cause else ""),
            retry_after=self.settings.retry_after,
        )

    # -- routes ------------------------------------------------------------------------
    async def webhook(self, request: Request) -> Response:
        received = time.time_ns() // 1_000_000
        try:
            raw = await read_body(request, self.settings.max_body_bytes)
            self._verify(request, raw)
            item = self.intake.prepare(parse_json(raw), received_at_millis=received)
            if isinstance(item, Ignored):
                self.metrics.ignored.inc()
                return json_response({"id": item.id, "event": item.event, "ignored": True}, 202)
            partition, offset = await self._publish(item)
        except GatewayError as exc:
            self.metrics.rejected.labels(str(exc.status)).inc()
            return error_response(exc)
        return json_response(self._accepted(item, partition, offset), 202)

    async def webhook_batch(self, request: Request) -> Response:
        received = time.time_ns() // 1_000_000
        try:
            raw = await read_body(request, self.settings.max_batch_bytes)
            self._verify(request, raw)
            items = parse_batch(raw)
            if not self.prepared:
                raise self._not_ready()
        except GatewayError as exc:
            return error_response(exc)
        publisher = self.publisher
        assert publisher is not None
        prepare, submit, topic = self.intake.prepare, publisher.submit, self.settings.topic
        writes = publisher.open()
        answers: list[dict[str, Any]] = []
        sent: list[tuple[int, Item, Prepared]] = []  # (answer position, item, what was produced)
        ignored = 0
        for it in items:  # every write is handed to the producer before any is waited for
            # the parsed JSON is dropped as soon as it is encoded: ~50 containers per webhook
            # that would otherwise live until Kafka answers and fill the GC's older generations
            body, it.body = it.body, None
            try:
                if it.error is not None:
                    raise it.error
                prepared = prepare(body, received_at_millis=received)
                if isinstance(prepared, Ignored):
                    ignored += 1
                    answers.append({"index": it.index, "line": it.line, "status": 202,
                                    "id": prepared.id, "event": prepared.event, "ignored": True})  # fmt: skip
                    continue
                submit(writes, prepared.key, prepared.value, prepared.headers)
            except GatewayError as exc:
                answers.append(_failure(it, exc))
                continue
            sent.append((len(answers), it, prepared))
            answers.append({})  # filled in once Kafka answered
        outcomes = await publisher.wait(writes)  # slot order is the order of `sent`
        produced: dict[str, int] = {}
        rejected: dict[int, int] = {}
        for (position, it, prepared), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, DeliveryError):
                answers[position] = _failure(it, outcome)
                continue
            answers[position] = {"index": it.index, "line": it.line, "status": 202, "id": prepared.id,
                                 "event": prepared.event, "topic": topic, "partition": outcome[0],
                                 "offset": outcome[1]}  # fmt: skip
            produced[prepared.event] = produced.get(prepared.event, 0) + 1
        for a in answers:
            if a["status"] != 202:
                rejected[a["status"]] = rejected.get(a["status"], 0) + 1
        for event, n in produced.items():
            self.metrics.produced.labels(event).inc(n)
        self.metrics.ignored.inc(ignored)
        for status, n in rejected.items():
            self.metrics.rejected.labels(str(status)).inc(n)
        n_rejected = sum(rejected.values())
        retry = 503 in rejected
        status = 503 if retry else 207 if n_rejected else 202
        body = {
            "accepted": len(answers) - n_rejected - ignored,
            "ignored": ignored,
            "rejected": n_rejected,
            "items": answers,
        }
        return json_response(body, status, {"Retry-After": str(self.settings.retry_after)} if retry else None)

    async def healthz(self, _request: Request) -> Response:
        """Alive, unless the producer failed fatally (every webhook would be a 503 forever):
        then a 503, so that a liveness probe restarts the gateway."""
        if failed := self._failed():
            return json_response({"status": "failed", "detail": failed}, 503)
        return json_response({"status": "ok"}, 200)

    def _failed(self) -> str | None:
        """Why the gateway cannot recover by itself (its producer's fatal error), or None."""
        fatal = self.publisher.fatal if self.publisher is not None else None
        return None if fatal is None else f"Kafka producer failed fatally ({fatal}): restart the gateway"

    async def readyz(self, _request: Request) -> Response:
        publisher = self.publisher
        if failed := self._failed():
            return json_response({"ready": False, "detail": failed}, 503)
        ok = self.prepared and publisher is not None and await asyncio.to_thread(publisher.broker_reachable)
        if ok:
            return json_response({"ready": True, "topic": self.settings.topic}, 200)
        detail = f"Kafka at {self.settings.bootstrap_servers} unreachable"
        if not self.prepared:
            detail = str(self._not_ready())
        elif publisher is not None and publisher.errors.last:
            detail += f" ({publisher.errors.last})"
        return json_response(
            {"ready": False, "detail": detail},
            503,
            {"Retry-After": str(self.settings.retry_after)},
        )

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), 200, media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, _request: Request) -> Response:
        return Response(self._openapi, 200, media_type="application/json")

    # -- helpers -----------------------------------------------------------------------
    def _verify(self, request: Request, raw: bytes) -> None:
        if self.keys:
            verify_signature(self.keys, request.headers, raw)

    async def _publish(self, item: Prepared) -> Delivered:
        assert self.publisher is not None
        if not self.prepared:
            raise self._not_ready()
        delivered = await self.publisher.publish(item.key, item.value, item.headers)
        self.metrics.produced.labels(item.event).inc()
        return delivered

    def _accepted(self, item: Prepared, partition: int, offset: int) -> dict[str, Any]:
        topic = self.settings.topic
        return {"id": item.id, "event": item.event, "topic": topic, "partition": partition, "offset": offset}


def _failure(item: Item, exc: GatewayError) -> dict[str, Any]:
    """The answer for a batch item that was not produced."""
    answer: dict[str, Any] = {"index": item.index, "line": item.line, "status": exc.status,
                              "error": type(exc).__name__, "detail": str(exc)}  # fmt: skip
    if isinstance(exc, WebhookValidationError):
        answer["problems"] = [p.as_dict() for p in exc.problems]
    return answer


def create_app(settings: GatewaySettings, *, publisher: EventPublisher | None = None) -> ASGIApp:
    """The ASGI app: Starlette routes wrapped in the request-metrics middleware."""
    gw = Gateway(settings, publisher)
    app = Starlette(
        routes=[
            Route("/webhooks", gw.webhook, methods=["POST"]),
            Route("/webhooks/batch", gw.webhook_batch, methods=["POST"]),
            Route("/healthz", gw.healthz, methods=["GET"]),
            Route("/readyz", gw.readyz, methods=["GET"]),
            Route("/metrics", gw.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", gw.openapi, methods=["GET"]),
        ],
        lifespan=gw.lifespan,
    )
    app.state.gateway = gw
    return MetricsMiddleware(app, gw.metrics)
