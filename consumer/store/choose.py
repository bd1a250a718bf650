"""The one module that chooses a store backend from a URL. No backend imports it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from consumer.exceptions import ConfigError
from consumer.fold.registry import REGISTRY, Registry
from consumer.store.base import Retention, Store


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
        f"unsupported store URL {url!r}: use sqlite:///path/to/metrics.db "
        "or postgresql://user@host:port/database"
    )


def redacted(url: str) -> str:
    """The store URL as logs may show it: a password in it replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
