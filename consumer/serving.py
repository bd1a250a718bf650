"""Run the API with uvicorn: in the foreground (`serve`) or in a thread (`consume --http-port`)."""

from __future__ import annotations

import threading

import uvicorn

from consumer.api import create_app
from consumer.store import Retention, open_store


def api_server(store_url: str, host: str, port: int) -> uvicorn.Server:
    app = create_app(lambda: open_store(store_url, retention=Retention()))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return uvicorn.Server(config)


def serve_in_thread(store_url: str, host: str, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = api_server(store_url, host, port)
    # uvicorn installs signal handlers only on the main thread: the consumer keeps them
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    return server, thread
