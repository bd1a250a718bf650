"""HTTP API over the store: `/v1/metrics`, `/v1/backlog`, `/v1/metric-set`, `/v1/closures`,
`/v1/closures/conversations`, `/v1/summary`,
`/metrics`, `/healthz`, `/readyz`, and the dashboard page at `/` (its assets under
`/static/`, shipped in the package). A store that cannot be read is a 503 + Retry-After
naming why (logged once), never a 500."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumer.exceptions import QueryError, StoreError
from consumer.fold import BY_CHANNEL
from consumer.fold.registry import ACCOUNT
from consumer.fold.windows import ALL
from consumer.serve.conversations import conversations_json, parse_conversations_query
from consumer.serve.metrics_query import (
    NO_GAUGES,
    MetricsQuery,
    backlog_json,
    metric_set_json,
    metrics_json,
    parse_backlog_query,
    parse_metrics_query,
)
from consumer.serve.overview import MAX_LABEL_VALUES, channel_summary
from consumer.serve.prom import ClosureCollector
from consumer.serve.query import parse_query, response_json
from consumer.serve.tokens import GLOBAL, Expired, Scope, Tokens
from consumer.store import Store

log = logging.getLogger(__name__)


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _unauthorized(why: str, error: str) -> Response:
    body = orjson.dumps(
        {
            "error": f"{why}: this API needs a token; its operator gives them (`convmetrics token new`)",
            "reason": why,
        }
    )
    return Response(body, 401, {"WWW-Authenticate": f'Bearer realm="convmetrics"{error}'}, "application/json")


def _scoped(scope: Scope, q: MetricsQuery) -> MetricsQuery | Response:
    """A token scoped to some accounts reads groupings by account, one of its accounts at a
    time (implied when it has one): the query to run, or the 403 or 400 to answer."""
    assert scope.accounts is not None
    if ACCOUNT not in q.group.dimensions:
        msg = f"a token scoped to accounts {scope} reads groupings by account, not group={q.group.name}"
        return _json({"error": msg}, 403)
    asked = q.filters.get(ACCOUNT)
    if asked is None:
        if len(scope.accounts) != 1:
            return _json({"error": f"a token scoped to accounts {scope}: name one with account="}, 400)
        return replace(q, filters={**q.filters, ACCOUNT: str(next(iter(scope.accounts)))})
    if int(asked) not in scope.accounts:
        return _json({"error": f"account {asked} is not in this token's scope ({scope})"}, 403)
    return q


def _params(request: Request) -> dict[str, str]:
    """The query's parameters by name; QueryError naming one given more than once (which of
    its values was meant is not for the API to guess)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            raise QueryError(f"{name} is given more than once: give each parameter once")
        params[name] = value
    return params


def _no_parameters(endpoint: str, request: Request) -> str:
    names = ", ".join(sorted(set(request.query_params)))
    return f"{endpoint} takes no parameters, got {names}"


def create_app(
    open_store: Callable[[], Store],
    *,
    registry: CollectorRegistry | None = None,
    max_label_values: int = MAX_LABEL_VALUES,
    tokens: Tokens | None = None,
    ready: Callable[[], str | None] | None = None,
    alive: Callable[[], str | None] | None = None,
) -> Starlette:
    """The API app.

    Args:
        open_store: called once per worker thread (SQLite connections must not be shared
            between threads).
        registry: more Prometheus metrics for `/metrics` (the consumer process's own health,
            when the API runs inside `consume`); closure metrics are always there.
        max_label_values: channel types `/metrics` and `/v1/summary` show by name (the
            busiest); the rest are summed under `_other`.
        tokens: who may read what (`consumer.serve.tokens`); None: the API is open. The
            dashboard page, its assets, `/v1/metric-set`, `/healthz` and `/readyz` hold no
            data and stay open.
        ready: more to `/readyz` than a store that answers (inside `consume`: the consumer
            in its group): returns why it is not ready, or None.
        alive: what `/healthz` asks beyond the process answering (inside `consume`: the
            consumer making progress, `consumer.stream.watchdog`): why it is not, or None.
    """
    local = threading.local()

    def store() -> Store:
        s: Store | None = getattr(local, "store", None)
        if s is None:
            s = local.store = open_store()
        return s

    closure_registry = CollectorRegistry()
    closure_registry.register(ClosureCollector(store, max_label_values))
    page = files("consumer.serve").joinpath("static", "index.html").read_text(encoding="utf-8")

    def authorize(request: Request) -> Scope | Response:
        """The scope of the request's bearer token, or the 401 to answer."""
        if tokens is None:
            return GLOBAL
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("send Authorization: Bearer <token>", "")
        scope = tokens.scope_of(token.strip())
        if scope is None or isinstance(scope, Expired):
            why = "unknown token" if scope is None else str(scope)
            return _unauthorized(why, f', error="invalid_token", error_description="{why}"')
        return scope

    def everything(request: Request) -> Response | None:
        """None when the request's token may read across tenants, else its 401 or 403."""
        scope = authorize(request)
        if isinstance(scope, Response):
            return scope
        if not scope.is_global:
            return _json({"error": f"a token scoped to accounts {scope} reads their account rows only"}, 403)
        return None

    def closures(request: Request) -> Response:
        scope = authorize(request)
        if isinstance(scope, Response):
            return scope
        s = store()
        try:
            q = parse_query(_params(request), s.registry)  # the store's metric set
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
        keys = q.keys
        if scope.accounts is not None:
            dims = s.registry.grouping(q.by).dimensions
            if dims != (ACCOUNT,):
                msg = f"a token scoped to accounts {scope} reads by=account only here; " + (
                    f"/v1/metrics?group={q.by}&account=<id> serves its rows of by={q.by}"
                    if ACCOUNT in dims
                    else f"by={q.by} is across tenants"
                )
                return _json({"error": msg}, 403)
            asked = [q.key] if q.key is not None else list(q.keys or ())
            if outside := [k for k in asked if int(k) not in scope.accounts]:
                return _json({"error": f"account {outside[0]} is not in this token's scope ({scope})"}, 403)
            keys = tuple(str(a) for a in sorted(scope.accounts)) if not asked else tuple(asked)
        # only the columns /v1/closures shows (a full-set store holds twice as many), or
        # those of `fields`
        shown = q.shown(s.registry)
        if q.sort is not None:
            ranked, total = s.rank(replace(q.ranking(), keys=keys, metrics=shown))
            return _json(response_json(q, ranked, s.registry, total))
        rows = s.query(
            q.by,
            q.window,
            key=q.key,
            start_from=q.start_from,
            start_to=q.start_to,
            after=q.after,
            limit=q.limit + 1,
            contains=q.contains,
            keys=keys,
            metrics=shown,
        )
        return _json(response_json(q, rows, s.registry))

    def grouped_query(
        request: Request, parse: Callable[..., MetricsQuery]
    ) -> tuple[Store, MetricsQuery, Scope] | Response:
        """The store, a grouping's query (`/v1/metrics`, `/v1/backlog`) narrowed to the
        token's accounts, and the token's scope; or the answer that refuses it (401/403, a
        400 naming the parameter)."""
        scope = authorize(request)
        if isinstance(scope, Response):
            return scope
        s = store()
        try:
            q = parse(_params(request), s.registry)
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
        if scope.accounts is not None:
            allowed = _scoped(scope, q)
            if isinstance(allowed, Response):
                return allowed
            q = allowed
        return s, q, scope

    def metrics_rows(request: Request) -> Response:
        found = grouped_query(request, parse_metrics_query)
        if isinstance(found, Response):
            return found
        s, q, _ = found
        rows = s.query(
            q.group.name,
            q.window,
            key=q.key,
            start_from=q.start_from,
            start_to=q.start_to,
            after=q.after,
            limit=q.limit + 1,
            parts=q.parts,
        )
        return _json(metrics_json(q, rows, s.registry))

    def backlog(request: Request) -> Response:
        """The live gauges of a grouping (the full metric set folds them). `as_of`, the
        newest event time of the whole store, is another tenant's time for a token scoped to
        accounts: null for it."""
        found = grouped_query(request, parse_backlog_query)
        if isinstance(found, Response):
            return found
        s, q, scope = found
        if not s.registry.gauges:
            return _json({"error": NO_GAUGES}, 404)
        as_of, rows = s.backlog(q.group.name, key=q.key, parts=q.parts)
        if not scope.is_global:
            as_of = None
        return _json(backlog_json(q, as_of, rows, s.registry))

    def conversations(request: Request) -> Response:
        """The closures behind a number: one account's, the account named (a token scoped
        to accounts: one of its own)."""
        scope = authorize(request)
        if isinstance(scope, Response):
            return scope
        s = store()
        try:
            q = parse_conversations_query(_params(request), s.registry)
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
        if scope.accounts is not None and q.account not in scope.accounts:
            return _json({"error": f"account {q.account} is not in this token's scope ({scope})"}, 403)
        rows = s.closure_list(replace(q, limit=q.limit + 1))
        return _json(conversations_json(q, rows))

    def metric_set(request: Request) -> Response:
        """What the store's metric set holds: names and where each counts, no data (so it
        stays open, like the dashboard page that reads it)."""
        if request.query_params:
            return _json({"error": _no_parameters("metric-set", request)}, 400)
        return _json(metric_set_json(store().registry))

    def summary(request: Request) -> Response:
        if (refused := everything(request)) is not None:
            return refused
        if request.query_params:
            return _json({"error": _no_parameters("summary", request)}, 400)
        return _json(channel_summary(store(), max_label_values))

    def metrics(request: Request) -> Response:
        if (refused := everything(request)) is not None:
            return refused
        body = generate_latest(closure_registry)
        if registry is not None:
            body += generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def healthz(request: Request) -> Response:
        """Alive: the process answers and, inside `consume`, the consumer makes progress
        (an orchestrator's liveness probe restarts it otherwise)."""
        why = alive() if alive is not None else None
        if why is not None:
            return Response(
                orjson.dumps({"status": "stalled", "error": why}), 503, media_type="application/json"
            )
        return _json({"status": "ok"})

    def readyz(request: Request) -> Response:
        """Ready when the store answers a query and no newer release upgraded it since (a
        load balancer's probe)."""
        store().newest_start(BY_CHANNEL, ALL)  # a StoreError is answered by `unavailable`
        store().check_format()
        why = ready() if ready is not None else None
        if why is not None:
            return Response(
                orjson.dumps({"ready": False, "error": why}), 503, {"Retry-After": "5"}, "application/json"
            )
        return _json({"ready": True})

    said: list[str] = []  # the store error last logged: each one once, not per request

    def unavailable(request: Request, exc: Exception) -> Response:
        """A store that cannot be read: 503 + Retry-After naming why, logged once."""
        message = str(exc)
        if not said or said[-1] != message:
            said[:] = [message]
            log.error("store unavailable (answering 503 until it is back): %s", message)
        body = {"ready": False, "error": f"store unavailable: {message}"}
        return Response(orjson.dumps(body), 503, {"Retry-After": "5"}, "application/json")

    def dashboard(request: Request) -> Response:
        return HTMLResponse(page)

    return Starlette(
        routes=[
            Route("/", dashboard, methods=["GET"]),
            Route("/v1/metrics", metrics_rows, methods=["GET"]),
            Route("/v1/metric-set", metric_set, methods=["GET"]),
            Route("/v1/backlog", backlog, methods=["GET"]),
            Route("/v1/closures", closures, methods=["GET"]),
            Route("/v1/closures/conversations", conversations, methods=["GET"]),
            Route("/v1/summary", summary, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Mount("/static", StaticFiles(packages=[("consumer.serve", "static")]), name="static"),
        ],
        exception_handlers={StoreError: unavailable},
    )
