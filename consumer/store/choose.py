"""The one module that chooses a store backend from a URL. No backend imports it."""

from __future__ import annotations

from collections.abc import Callable

from consumer.exceptions import ConfigError
from consumer.fold.registry import REGISTRY, Registry
from consumer.store.base import Retention, Store
from schemas.urls import redacted as redacted_url


def open_store(
    url: str,
    *,
    retention: Retention | None = None,
    registry: Registry = REGISTRY,
    on_retry: Callable[[str], None] | None = None,
) -> Store:
    """Open a store from a URL: `sqlite:///relative.db`, `sqlite:////absolute/path.db` or
    `postgresql://user[:password]@host[:port]/database` (libpq's URL syntax), holding the
    metrics of `registry`. `on_retry(what)`: at each retry of a call the store rides an
    outage out on (PostgreSQL's claim and load, in a rebalance; SQLite waits for its lock
    instead, and has no such retries)."""
    if check_store_url(url) == "sqlite":
        from consumer.store.sqlite import SqliteStore

        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        return SqliteStore(
            url.removeprefix("sqlite:///"), retention=retention or Retention(), registry=registry
        )
    from consumer.store.postgres import PostgresStore

    return PostgresStore(url, retention=retention or Retention(), registry=registry, on_retry=on_retry)


def check_store_url(url: str) -> str:
    """The backend a store URL names ("sqlite" or "postgres"), or ConfigError saying what a
    store URL looks like: checked without opening anything (`serve` opens its store at the
    first request, so that it may start before the database does)."""
    if url.startswith("sqlite:///"):
        if not url.removeprefix("sqlite:///"):
            raise ConfigError(f"store URL {url!r} names no file: use sqlite:///metrics.db")
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgres"
    raise ConfigError(
        f"unsupported store URL {redacted(url)!r}: use sqlite:///path/to/metrics.db "
        "or postgresql://user@host:port/database"
    )


def redacted(url: str) -> str:
    """The store URL as logs may show it: its passwords replaced by `***` (`schemas.urls`)."""
    return redacted_url(url)
