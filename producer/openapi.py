"""The gateway's OpenAPI 3.1 document, written out; the webhook schema comes from pydantic."""

from __future__ import annotations

from typing import Any

from producer.models import Webhook

REF = "#/components/schemas/{model}"


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}

ACCEPTED: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event"],
    "properties": {
        "id": {"type": ["string", "null"], "description": "event id"},
        "event": {"type": "string"},
        "ignored": {"type": "boolean", "description": "true: not a conversation event, not produced"},
        "topic": {"type": "string"},
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
    },
}
PROBLEM = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {"loc": {"type": "string"}, "msg": {"type": "string"}, "type": {"type": "string"}},
}
ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "problems": {"type": "array", "items": _ref("Problem")},
    },
}
BATCH_ITEM = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer"},
        "line": {"type": "integer"},
        "status": {"type": "integer", "enum": [202, 400, 422, 503]},
        **ACCEPTED["properties"],
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "problems": {"type": "array", "items": _ref("Problem")},
    },
}
BATCH = {
    "type": "object",
    "required": ["accepted", "ignored", "rejected", "items"],
    "properties": {
        "accepted": {"type": "integer"},
        "ignored": {"type": "integer"},
        "rejected": {"type": "integer"},
        "items": {"type": "array", "items": _ref("BatchItem")},
    },
}

SIGNATURE_HEADERS = [
    {"name": n, "in": "header", "required": False, "schema": {"type": "string"}, "description": d}
    for n, d in (
        ("webhook-id", "Standard Webhooks message id (required when secrets are configured)"),
        ("webhook-timestamp", "unix seconds; at most 5 minutes from the gateway's clock"),
        ("webhook-signature", "space-separated v1,<base64 HMAC-SHA256 of id.timestamp.body>"),
    )
]


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "malformed JSON",
        401: "missing, malformed, expired or wrong signature (only when secrets are configured)",
        413: "body larger than the limit (counted while it streams in)",
        422: "a conversation event that fails validation; `problems` names each field path",
        503: "Kafka unreachable or no acknowledgement in time: retry after Retry-After seconds",
    }
    return {str(s): _json(_ref("Error"), text[s], RETRY_AFTER if s == 503 else None) for s in statuses}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    webhook = Webhook.model_json_schema(ref_template=REF, by_alias=True, mode="validation")
    defs = webhook.pop("$defs", {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "convmetrics gateway",
            "version": "1",
            "description": "Conversation webhooks in, Avro events out to Kafka; 2xx only once durable.",
        },
        "paths": {
            "/webhooks": {
                "post": {
                    "summary": "One webhook, answered 202 once Kafka acknowledged it (or ignored)",
                    "operationId": "postWebhook",
                    "parameters": SIGNATURE_HEADERS,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Webhook")}},
                    },
                    "responses": {
                        "202": _json(_ref("Accepted"), "durable in Kafka, or ignored (`ignored: true`)"),
                        **_errors(400, 401, 413, 422, 503),
                    },
                }
            },
            "/webhooks/batch": {
                "post": {
                    "summary": "A JSON array or NDJSON of webhooks, answered per item",
                    "operationId": "postWebhookBatch",
                    "parameters": SIGNATURE_HEADERS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": _ref("Webhook")}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": _json(_ref("Batch"), "every item durable or ignored"),
                        "207": _json(
                            _ref("Batch"), "some items rejected (4xx, see items); none failed on Kafka"
                        ),
                        "503": _json(
                            _ref("Batch"), "some items not acknowledged by Kafka: retry", RETRY_AFTER
                        ),
                        **_errors(400, 401, 413),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "process alive",
                    "operationId": "healthz",
                    "responses": {"200": _json({"type": "object"}, "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "broker reachable",
                    "operationId": "readyz",
                    "responses": {
                        "200": _json({"type": "object"}, "Kafka answers metadata for the topic"),
                        "503": _json({"type": "object"}, "Kafka unreachable", RETRY_AFTER),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                **defs,
                "Webhook": webhook,
                "Accepted": ACCEPTED,
                "Problem": PROBLEM,
                "Error": ERROR,
                "BatchItem": BATCH_ITEM,
                "Batch": BATCH,
            }
        },
    }
