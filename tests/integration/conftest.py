"""Integration fixtures: the session's PostgreSQL (see support/postgres.py) and schema registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from convmetrics.localregistry import schema_registry_url
from support.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session: configured, Docker, or local. Errors (so the
    tests fail, never skip) when none can be had."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """The URL of a real Confluent-compatible schema registry for the session:
    ``$CONVMETRICS_SCHEMA_REGISTRY_URL``, else Apicurio Registry in a local JVM (started
    once, on first use; in-memory storage). Errors, never skips, when none can be had."""
    with schema_registry_url() as url:
        yield url
