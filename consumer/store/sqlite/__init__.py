"""The SQLite backend: embedded, one file, WAL (the default store)."""

from consumer.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
