"""Errors of the gateway. `GatewayError` is the root; each maps to one HTTP answer.

Every error says what was wrong with which input, so that the sender (or the operator
reading a `convmetrics produce` summary) can act on it.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Root of every error raised by `producer`."""

    #: HTTP status the gateway answers when this error ends a request.
    status: int = 500


class SettingsError(GatewayError):
    """A setting (flag or ``CONVMETRICS_*`` variable) that cannot be used."""


class TopicError(GatewayError):
    """The events topic is missing and could not be created (or the cluster is unreachable)."""


class KeyMismatchError(TopicError):
    """The events topic holds events keyed otherwise than `--key-by` says: producing to it
    would split conversations between partitions. ``found`` is the topic's key."""

    def __init__(self, message: str, found: str) -> None:
        super().__init__(message)
        self.found = found


class InputError(GatewayError):
    """Something wrong with what the sender sent; retrying the same bytes will not help."""

    status = 400


class MalformedJSONError(InputError):
    """The body (or one NDJSON line) is not JSON."""

    status = 400


class BodyTooLargeError(InputError):
    """The body grew past the configured limit while it streamed in."""

    status = 413

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body is larger than the limit of {limit} bytes")


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One reason a webhook was rejected: where (dotted path) and why."""

    loc: str
    msg: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"loc": self.loc, "msg": self.msg, "type": self.type}

    def __str__(self) -> str:
        return f"{self.loc or '(body)'}: {self.msg}"


class WebhookValidationError(InputError):
    """A conversation webhook that does not have the shape the platform documents."""

    status = 422

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class SignatureError(GatewayError):
    """A missing, malformed, expired or non-matching Standard Webhooks signature."""

    status = 401


class DeliveryError(GatewayError):
    """Kafka did not acknowledge the write: the sender should retry later.

    Attributes:
        retry_after: seconds the sender should wait before retrying.
    """

    status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BrokerUnavailableError(DeliveryError):
    """The producer refused the write (queue full, fatal producer error, shutting down)."""


class DeliveryTimeoutError(DeliveryError):
    """No acknowledgement from the broker within the delivery timeout."""
