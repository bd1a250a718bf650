"""Property-based run of the live gateway's own OpenAPI document: no 5xx but 503.

Schemathesis generates bodies and headers from ``/openapi.json`` (valid and invalid
ones) and sends them to a real gateway on the real broker.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance
from test_gateway import GatewayProcess


@pytest.fixture(scope="module")
def live_gateway(kafka_bootstrap: str) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(kafka_bootstrap, f"gwo-{uuid.uuid4().hex[:10]}", "--max-body-bytes", "65536")
    yield gw
    gw.stop()


def check_case(case: Any, seen: Counter[tuple[str, int]]) -> None:
    response = case.call(timeout=30)
    seen[(case.path, response.status_code)] += 1
    assert response.status_code < 500 or response.status_code == 503, (
        case.path,
        response.status_code,
        response.text,
    )
    case.validate_response(
        response, checks=(status_code_conformance, content_type_conformance, response_schema_conformance)
    )


def test_no_server_error_but_503(live_gateway: GatewayProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{live_gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/webhooks", "/webhooks/batch"}
    seen: Counter[tuple[str, int]] = Counter()
    for operation in operations:
        for mode in GenerationMode:
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                check_case(case, seen)

            run()
    # the run reached both the producing path and the rejecting paths
    assert seen[("/webhooks", 202)] and seen[("/webhooks", 400)] + seen[("/webhooks", 422)], seen
    assert seen[("/webhooks/batch", 202)] + seen[("/webhooks/batch", 207)], seen
