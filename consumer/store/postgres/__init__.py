"""The PostgreSQL backend: one database shared by consumers on several machines."""

from consumer.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
