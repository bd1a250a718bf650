"""Pydantic models of a conversation webhook, exactly as the platform sends it.

Unknown extra fields are ignored (dropped). Integers are strict (no ``"1"`` strings, no
floats, no booleans) and range-checked to Avro's ``long``/``int`` so that everything that
validates also encodes. Event times (the envelope's and ``data``'s ``createdAt``,
``openedAt``, ``closedAt``, ``assignedAt``, ``snoozedAt``) must be unix seconds from 1970 to
9999: a time in milliseconds is refused (422) instead of counting in the year 55,000.
The envelope time may be named ``createdAt`` or ``<verb>_at`` (``closed_at``,
``assigned_at``, ...): the platform's documents use both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, model_validator

Long = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
Int = Annotated[int, Field(strict=True, ge=-(2**31), le=2**31 - 1)]
#: the last second of year 9999: event times beyond it are not unix seconds (a time in
#: milliseconds or nanoseconds is); the consumer's arithmetic on them (window starts,
#: ingest lag in milliseconds, time to close) would leave 64 bits or make absurd windows
MAX_EVENT_TIME = 253_402_300_799
#: an event time: what the metrics count by (the consumer dead-letters ones that overflow)
EventTime = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=MAX_EVENT_TIME,
        description="unix seconds, 1970-01-01 to 9999-12-31, and at most a day after the gateway's clock",
    ),
]
Text = Annotated[str, Field(strict=True)]
#: what a channel type looks like (the platform's names): a bound on what may become a
#: metrics row, a Prometheus label value and a dashboard entry
CHANNEL_TYPE_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
OptText = Text | None

#: Envelope time fields other than ``createdAt``, tried in this order after ``<verb>_at``.
ENVELOPE_TIME_FIELDS: tuple[str, ...] = (
    "created_at",
    "opened_at",
    "closed_at",
    "assigned_at",
    "snoozed_at",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Identifier(_Model):
    """A customer's id on a channel, e.g. ``TELEGRAM_ID``."""

    sourceId: Text
    category: Text


class ChannelUser(_Model):
    """The customer."""

    typename: Literal["ChannelUser"] = Field(alias="__typename")
    id: Long
    name: OptText = None
    firstName: OptText = None
    lastName: OptText = None
    displayName: OptText = None
    avatarUrl: OptText = None
    optimisedAvatarUrl: OptText = None
    identifiers: list[Identifier] = Field(default_factory=list)


class AppUser(_Model):
    """An agent of the team inbox."""

    typename: Literal["AppUser"] = Field(alias="__typename")
    id: Long
    fullName: OptText = None
    displayName: OptText = None
    optimisedAvatarUrl: OptText = None


class Participant(_Model):
    user: Annotated[ChannelUser | AppUser, Field(discriminator="typename")]


class Channel(_Model):
    id: Long


def _time(camel: str) -> Any:  # an EventTime field, camelCase or snake_case
    return Field(default=None, validation_alias=AliasChoices(camel, _snake(camel)))


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


class Conversation(_Model):
    """The ``data`` object: one conversation as it is after the change the event reports."""

    id: Long
    channelType: Annotated[
        Text,
        Field(
            pattern=CHANNEL_TYPE_PATTERN,
            description="the platform's channel type name: an upper-case letter, then up to 63 "
            "upper-case letters, digits or underscores (TELEGRAM, CLOUD_WABA); names it does not "
            "list yet travel under their own name",
        ),
    ]
    state: OptText = None
    snoozedUntil: Long | None = None
    messageWindowExpiresAt: Long | None = None
    messageWindowExpiryConditions: list[JsonValue] | None = None
    lastReadByAppUserAt: Long | None = None
    lastInboundMessageAt: Long | None = None
    createdAt: EventTime | None = _time("createdAt")
    openedAt: EventTime | None = _time("openedAt")
    closedAt: EventTime | None = _time("closedAt")
    assignedAt: EventTime | None = _time("assignedAt")
    snoozedAt: EventTime | None = _time("snoozedAt")
    channel: Channel | None = None
    participants: list[Participant] | None = None


class Webhook(_Model):
    """One conversation webhook (the envelope and its conversation)."""

    event: Text
    id: Annotated[Text, Field(min_length=1)]
    account: Long
    app: Long
    createdAt: EventTime = Field(
        description="Envelope time (unix seconds, 1970 to 9999); `<verb>_at` (e.g. `closed_at`) "
        "is accepted instead."
    )
    deliveryAttempts: Int = 1
    firstDeliveryAttempt: Long | None = None
    data: Conversation

    @model_validator(mode="before")
    @classmethod
    def _envelope_time(cls, value: Any) -> Any:
        """Fill ``createdAt`` from ``<verb>_at`` when that is how the sender named it."""
        if not isinstance(value, dict) or "createdAt" in value:
            return value
        return {**value, "createdAt": value[key]} if (key := envelope_time_key(value)) else value


def envelope_time_key(body: dict[str, Any]) -> str | None:
    """The name under which ``body`` carries its envelope time, or None.

    ``createdAt`` wins; then ``<verb>_at`` for the event's own verb (``closed_at`` on
    ``conversation.closed``); then any of `ENVELOPE_TIME_FIELDS`.
    """
    if "createdAt" in body:
        return "createdAt"
    event = body.get("event")
    if isinstance(event, str) and "." in event:
        own = f"{event.rsplit('.', 1)[1]}_at"
        if own in body:
            return own
    return next((k for k in ENVELOPE_TIME_FIELDS if k in body), None)
