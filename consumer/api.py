"""HTTP API over the store: `GET /v1/closures`, `GET /healthz`."""

from __future__ import annotations

import threading
from collections.abc import Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumer.exceptions import QueryError
from consumer.query import parse_query, response_json
from consumer.store import Store


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app(open_store: Callable[[], Store]) -> Starlette:
    """The API app; `open_store` is called once per worker thread (SQLite connections
    must not be shared between threads)."""
    local = threading.local()

    def store() -> Store:
        s: Store | None = getattr(local, "store", None)
        if s is None:
            s = local.store = open_store()
        return s

    def closures(request: Request) -> Response:
        try:
            q = parse_query(dict(request.query_params))
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
        rows = store().query(
            q.by,
            q.window,
            key=q.key,
            start_from=q.start_from,
            start_to=q.start_to,
            after=q.after,
            limit=q.limit + 1,
        )
        return _json(response_json(q, rows))

    def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/closures", closures, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
