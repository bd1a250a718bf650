"""Run the API with uvicorn: in the foreground (`serve`) or in a thread (`consume --http-port`)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from consumer.fold.registry import CLOSURES, Registry
from consumer.serve.api import create_app
from consumer.serve.overview import MAX_LABEL_VALUES
from consumer.serve.tokens import Tokens
from consumer.store import Retention, open_store
from schemas.listen import KEEP_ALIVE_S, listening

log = logging.getLogger(__name__)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def api_server(
    store_url: str,
    host: str,
    port: int,
    *,
    registry: CollectorRegistry | None = None,
    metrics: Registry = CLOSURES,
    max_label_values: int = MAX_LABEL_VALUES,
    tokens: Tokens | None = None,
    ready: Callable[[], str | None] | None = None,
    alive: Callable[[], str | None] | None = None,
) -> uvicorn.Server:
    """`registry`: extra metrics for `/metrics` (the consumer's own, inside `consume`);
    `metrics`: the metric set the store holds (`--metric-set`); `tokens`: who may read
    what (None: open, with a warning beyond loopback)."""
    if tokens is None and host not in LOOPBACK:
        log.warning(
            "the API listens on %s without tokens: anyone who reaches it reads every account's "
            "numbers (pass --tokens-file, or bind 127.0.0.1)",
            host,
        )
    app = create_app(
        lambda: open_store(store_url, retention=Retention(), registry=metrics),
        registry=registry,
        max_label_values=max_label_values,
        tokens=tokens,
        ready=ready,
        alive=alive,
    )
    # log_config None: uvicorn's lines through the process's logging (one format, timestamped)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, log_config=None,
        timeout_keep_alive=KEEP_ALIVE_S,
    )  # fmt: skip
    return _Bound(config, listening(host, port))


class _Bound(uvicorn.Server):
    """A uvicorn server on a socket bound when it was made (`schemas.listen`): a port in use
    is an error where the command starts, not on the server's thread later."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        super().__init__(config)
        self.sock = sock

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        super().run(sockets=sockets or [self.sock])


def serve_in_thread(
    store_url: str, host: str, port: int, **options: Any
) -> tuple[uvicorn.Server, threading.Thread]:
    """`api_server` (the same `options`) run on a thread of its own."""
    server = api_server(store_url, host, port, **options)
    # uvicorn installs signal handlers only on the main thread: the consumer keeps them
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    return server, thread
