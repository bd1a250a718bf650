"""Integration fixtures: the session's PostgreSQL (see support/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
