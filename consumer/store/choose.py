"""The one module that chooses a store backend from a URL. No backend imports it."""

from __future__ import annotations

from consumer.exceptions import ConfigError
from consumer.fold.registry import REGISTRY, Registry
from consumer.store.base import Retention, Store
from schemas.urls import redacted as redacted_url


def open_store(url: str, *, retention: Retention | None = None, registry: Registry = REGISTRY) -> Store:
    """Open a store from a URL: `sqlite:///relative.db`, `sqlite:////absolute/path.db` or
    `postgresql://user[:password]@host[:port]/database` (libpq's URL syntax), holding the
    metrics of `registry`."""
    if url.startswith("sqlite:///"):
        from consumer.store.sqlite import SqliteStore

        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ConfigError(f"store URL {url!r} names no file: use sqlite:///metrics.db")
        return SqliteStore(path, retention=retention or Retention(), registry=registry)
    if url.startswith(("postgresql://", "postgres://")):
        from consumer.store.postgres import PostgresStore

        return PostgresStore(url, retention=retention or Retention(), registry=registry)
    raise ConfigError(
        f"unsupported store URL {redacted(url)!r}: use sqlite:///path/to/metrics.db "
        "or postgresql://user@host:port/database"
    )


def redacted(url: str) -> str:
    """The store URL as logs may show it: its passwords replaced by `***` (`schemas.urls`)."""
    return redacted_url(url)
