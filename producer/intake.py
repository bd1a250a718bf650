"""One webhook body (already parsed JSON) -> what to produce, or why not: pure, no I/O.

Shared by ``POST /webhooks``, ``POST /webhooks/batch`` and ``convmetrics produce`` so
that every path applies the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producer.exceptions import FieldProblem, WebhookValidationError
from producer.mapping import event_key, is_conversation_event, to_record
from producer.models import Webhook
from schemas import Codec, EncodeError


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event that is not a conversation event: acknowledged, not produced."""

    event: str
    id: str | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A conversation event, encoded and ready to produce."""

    event: str
    id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def prepare(body: Any, codec: Codec, *, received_at_millis: int | None = None) -> Prepared | Ignored:
    """Validate, map and encode one webhook (`received_at_millis`: when it arrived, unix ms).

    Raises:
        WebhookValidationError: the body is not a webhook object, or a conversation
            event whose fields do not validate (each problem names its field path).
    """
    if not isinstance(body, dict):
        raise WebhookValidationError(
            [FieldProblem("", f"expected a JSON object, got {_json_type(body)}", "object_type")]
        )
    event = body.get("event")
    if not isinstance(event, str):
        msg = "field required" if event is None else f"expected a string, got {_json_type(event)}"
        raise WebhookValidationError([FieldProblem("event", msg, "missing" if event is None else "string")])
    if not is_conversation_event(event):
        raw_id = body.get("id")
        return Ignored(event, raw_id if isinstance(raw_id, str) else None)
    try:
        webhook = Webhook.model_validate(body)
    except ValidationError as exc:
        raise WebhookValidationError(problems_of(exc)) from None
    try:
        value = codec.encode(to_record(webhook, received_at_millis=received_at_millis))
    except EncodeError as exc:  # defensive: validation is meant to make this impossible
        raise WebhookValidationError([FieldProblem("", str(exc), "avro")]) from exc
    return Prepared(event, webhook.id, event_key(webhook), value, codec.headers(event))


def problems_of(exc: ValidationError) -> list[FieldProblem]:
    """Pydantic errors as dotted field paths (``data.participants.0.user.id``)."""
    return [
        FieldProblem(".".join(str(p) for p in err["loc"]), err["msg"], err["type"])
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)
