"""The container suite: the project's images and compose stack on a real Docker engine.

Collected only with ``CONVMETRICS_CONTAINER_TESTS=1`` (tests/conftest.py): ``make
container-test`` (deploy/container-test.sh) starts the engine, builds the images, sets it
and ``CONVMETRICS_REQUIRE_DOCKER=1``, so a suite whose containers cannot start fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (a container here, as tests/integration's is)."""
    with postgres_server() as server:
        yield server
