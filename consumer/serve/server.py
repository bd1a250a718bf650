"""Run the API with uvicorn: in the foreground (`serve`) or in a thread (`consume --http-port`)."""

from __future__ import annotations

import threading

import uvicorn
from prometheus_client import CollectorRegistry

from consumer.serve.api import create_app
from consumer.serve.overview import MAX_LABEL_VALUES
from consumer.store import Retention, open_store


def api_server(
    store_url: str,
    host: str,
    port: int,
    *,
    registry: CollectorRegistry | None = None,
    max_label_values: int = MAX_LABEL_VALUES,
) -> uvicorn.Server:
    """`registry`: extra metrics for `/metrics` (the consumer's own, inside `consume`)."""
    app = create_app(
        lambda: open_store(store_url, retention=Retention()),
        registry=registry,
        max_label_values=max_label_values,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return uvicorn.Server(config)


def serve_in_thread(
    store_url: str,
    host: str,
    port: int,
    *,
    registry: CollectorRegistry | None = None,
    max_label_values: int = MAX_LABEL_VALUES,
) -> tuple[uvicorn.Server, threading.Thread]:
    server = api_server(store_url, host, port, registry=registry, max_label_values=max_label_values)
    # uvicorn installs signal handlers only on the main thread: the consumer keeps them
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    return server, thread
