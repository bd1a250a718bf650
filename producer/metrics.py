"""Prometheus metrics of one gateway, in their own registry, and the ASGI shell counting requests."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    """The gateway's metrics (requests by route and status, events, latency, in flight)."""

    def __init__(self, routes: frozenset[str]) -> None:
        self.routes = routes
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "convmetrics_gateway_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "convmetrics_gateway_requests_in_flight", "HTTP requests being served", registry=self.registry
        )
        self.produced = Counter(
            "convmetrics_gateway_events_produced",
            "Events acknowledged by Kafka, by event type",
            ["event"],
            registry=self.registry,
        )
        self.ignored = Counter(
            "convmetrics_gateway_events_ignored",
            "Non-conversation events answered 202 and not produced",
            registry=self.registry,
        )
        self.rejected = Counter(
            "convmetrics_gateway_events_rejected",
            "Webhooks (single or batch items) not produced, by status answered",
            ["status"],
            registry=self.registry,
        )
        self.produce_latency = Histogram(
            "convmetrics_gateway_produce_latency_seconds",
            "Time from handing an event to the producer to the broker's acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, int], Any] = {}

    def count_request(self, path: str, status: int) -> None:
        route = path if path in self.routes else "other"
        child = self._children.get((route, status))
        if child is None:
            child = self._children[(route, status)] = self.requests.labels(route, str(status))
        child.inc()


class MetricsMiddleware:
    """Counts every HTTP request by route and status and tracks the number in flight."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.count_request(scope["path"], status)
