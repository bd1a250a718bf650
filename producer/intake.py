"""One webhook body (already parsed JSON) -> what to produce, or why not: pure, no I/O.

Shared by ``POST /webhooks``, ``POST /webhooks/batch`` and ``convmetrics produce`` so
that every path applies the same rules.
"""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from producer.encoder import body_writer
from producer.exceptions import FieldProblem, SettingsError, WebhookValidationError
from producer.mapping import CONVERSATION_EVENTS, KEY_BY, KeyBy, event_key, to_record
from producer.models import Webhook, envelope_time_key
from schemas import Codec, EncodeError
from schemas.event_time import MAX_AHEAD_S, MAX_AHEAD_TEXT


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event that is not a conversation event: acknowledged, not produced."""

    event: str
    id: str | None


class Prepared(NamedTuple):
    """A conversation event, encoded and ready to produce.

    ``headers`` is shared by every event of the same type: do not change it. A named
    tuple, not a dataclass: one is made per event, and this is 2x cheaper.
    """

    event: str
    id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encoder_compiled() -> bool:
    """Whether the Avro body writer runs compiled (mypyc) rather than interpreted."""
    from producer import encoder

    return not str(encoder.__file__).endswith(".py")


class Intake:
    """`prepare` for one codec and key (`mapping.KEY_BY`), with what does not change per
    event worked out once."""

    def __init__(self, codec: Codec, key_by: KeyBy = "account") -> None:
        if key_by not in KEY_BY:
            raise SettingsError(f"key_by: {key_by!r} is not one of {', '.join(KEY_BY)}")
        if os.environ.get("CONVMETRICS_REQUIRE_NATIVE") == "1" and not encoder_compiled():
            raise SettingsError(
                "CONVMETRICS_REQUIRE_NATIVE=1 but producer/encoder.py runs interpreted: install a "
                "wheel built with a C compiler, or run `make setup`"
            )
        self.codec = codec
        self.key_by = key_by
        self._write_body = body_writer(codec)  # None: the reference path (record dict, fastavro)
        self._prefix = codec.prefix  # single-object or Confluent framing: the codec's
        self._headers = {event: codec.headers(event) for event in CONVERSATION_EVENTS}
        self._validate = Webhook.__pydantic_validator__.validate_python

    def prepare(self, body: Any, *, received_at_millis: int | None = None) -> Prepared | Ignored:
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
            kind = "missing" if event is None else "string"
            raise WebhookValidationError([FieldProblem("event", msg, kind)])
        headers = self._headers.get(event)
        if headers is None:  # not a conversation event
            raw_id = body.get("id")
            return Ignored(event, raw_id if isinstance(raw_id, str) else None)
        try:
            webhook: Webhook = self._validate(body)
        except ValidationError as exc:
            raise WebhookValidationError(problems_of(exc, body)) from None
        if ahead := times_ahead(webhook, body, time.time()):
            raise WebhookValidationError(ahead)
        value = None
        if self._write_body is not None:
            try:
                value = self._prefix + self._write_body(webhook, received_at_millis)
            except Exception:  # e.g. a lone surrogate: the reference path says why
                value = None
        if value is None:
            try:
                value = self.codec.encode(to_record(webhook, received_at_millis=received_at_millis))
            except EncodeError as exc:  # a string UTF-8 cannot hold (a lone surrogate), say
                loc = unencodable(body) or ""
                raise WebhookValidationError([FieldProblem(loc, str(exc), "avro")]) from exc
        return Prepared(event, webhook.id, event_key(webhook, self.key_by), value, headers)


_INTAKES: weakref.WeakKeyDictionary[Codec, dict[str, Intake]] = weakref.WeakKeyDictionary()


def prepare(
    body: Any, codec: Codec, *, received_at_millis: int | None = None, key_by: KeyBy = "account"
) -> Prepared | Ignored:
    """`Intake.prepare` with ``codec`` and ``key_by`` (see there)."""
    intakes = _INTAKES.get(codec)
    if intakes is None:
        intakes = _INTAKES[codec] = {}
    intake = intakes.get(key_by)
    if intake is None:
        intake = intakes[key_by] = Intake(codec, key_by)
    return intake.prepare(body, received_at_millis=received_at_millis)


def unencodable(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string in a parsed body that UTF-8 cannot hold (a lone
    surrogate), or None; only looked for once encoding failed."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = unencodable(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


def problems_of(exc: ValidationError, body: dict[str, Any] | None = None) -> list[FieldProblem]:
    """Pydantic errors as dotted field paths (``data.participants.0.user.id``). An envelope
    time sent as ``<verb>_at`` is named so, not as the ``createdAt`` it was validated as."""
    sent_as = envelope_time_key(body) if body is not None else None
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        problems.append(
            FieldProblem(sent_as if loc == "createdAt" and sent_as else loc, err["msg"], err["type"])
        )
    return problems


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


#: the conversation's event times (`data.<name>`), each the counted time of its event kind
DATA_TIMES = ("createdAt", "openedAt", "closedAt", "assignedAt", "snoozedAt")


def times_ahead(webhook: Webhook, body: dict[str, Any], now: float) -> list[FieldProblem]:
    """The event times more than MAX_AHEAD_S after `now` (this process's clock), each
    named: a sender's clock years ahead (the consumer would dead-letter the event; refused
    here, the sender hears why)."""
    limit = int(now) + MAX_AHEAD_S
    d = webhook.data
    if webhook.createdAt <= limit:  # every webhook but a wrong clock's: nothing more to make
        for t in (d.createdAt, d.openedAt, d.closedAt, d.assignedAt, d.snoozedAt):
            if t is not None and t > limit:
                break
        else:
            return []
    times = {
        envelope_time_key(body) or "createdAt": webhook.createdAt,
        **{f"data.{name}": getattr(d, name) for name in DATA_TIMES},
    }
    clock = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    return [
        FieldProblem(
            loc,
            f"{datetime.fromtimestamp(t, UTC).isoformat()} is more than {MAX_AHEAD_TEXT} after this "
            f"gateway's clock ({clock}): is the sender's clock right?",
            "time_ahead",
        )
        for loc, t in times.items()
        if t is not None and t > limit
    ]
