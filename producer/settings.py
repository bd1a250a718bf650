"""The gateway's one settings object: ``CONVMETRICS_*`` variables, overridden by flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from producer.exceptions import SettingsError
from producer.mapping import KeyBy
from producer.signature import parse_secret
from schemas import CONVERSATION_EVENT, Codec, argtypes, kafka, subject
from schemas.confluent import WireFormat
from schemas.exceptions import RegistryError
from schemas.kafka import KafkaSettingsError, client_config
from schemas.schema_registry import registry_settings, writer_codec

MIB = 1024 * 1024


class GatewaySettings(BaseSettings):
    """Frozen after start. Flags win over ``CONVMETRICS_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="CONVMETRICS_", frozen=True, extra="ignore")

    #: required, as for `consume`: a default broker address would have a forgotten setting
    #: run a gateway that is never ready (or write to whatever listens on this machine)
    bootstrap_servers: str
    topic: str = "conversation-events"
    webhook_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    max_body_bytes: int = Field(default=MIB, gt=0)
    max_batch_bytes: int = Field(default=16 * MIB, gt=0)
    delivery_timeout: float = Field(default=10.0, gt=0, description="seconds to wait for acks=all")
    retry_after: int = Field(default=5, ge=1, description="Retry-After seconds on 503")
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    partitions: int = Field(default=6, ge=1)
    #: None: the broker's default.replication.factor (a managed cluster's 3, a local broker's 1)
    replication_factor: int | None = Field(default=None, ge=1)
    linger_ms: float = Field(default=5.0, ge=0)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    create_topic: bool = True
    #: what an event's Kafka key holds (`producer.mapping.KEY_BY`)
    key_by: KeyBy = "account"
    #: how events are framed (CONVMETRICS_WIRE_FORMAT): single-object, or confluent with the
    #: schema id from the registry (CONVMETRICS_SCHEMA_REGISTRY_URL), looked up at start
    wire_format: WireFormat = WireFormat.SINGLE_OBJECT
    schema_registry_url: str | None = None
    #: librdkafka settings of every Kafka client (security, tuning), checked: `schemas.kafka`;
    #: kept out of the repr (they hold passwords)
    kafka: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        # librdkafka reads a port it cannot parse as 0 and retries host:0 forever
        try:
            return argtypes.bootstrap_servers(value)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc).split(", got ", 1)[0]) from None  # the caller adds the value

    @field_validator("kafka")
    @classmethod
    def _own_timeout(cls, value: dict[str, str]) -> dict[str, str]:
        # the gateway's answer waits for this long (503 after it): its own setting, not librdkafka's
        if "message.timeout.ms" in value:
            raise ValueError("message.timeout.ms is set by --delivery-timeout (CONVMETRICS_DELIVERY_TIMEOUT)")
        return value

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _check(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            try:
                parse_secret(secret.get_secret_value())
            except SettingsError as exc:  # named by its field, as every refused setting is
                raise ValueError(str(exc)) from None
        return value

    def signing_keys(self) -> list[bytes]:
        """HMAC keys of the configured secrets (empty: signatures are not checked)."""
        return [parse_secret(s.get_secret_value()) for s in self.webhook_secrets]

    def producer_config(self) -> dict[str, Any]:
        """librdkafka settings: durable (acks=all, idempotent), batched, bounded in time."""
        return client_config(
            self.bootstrap_servers,
            self.kafka,
            tuning={"linger_ms": self.linger_ms, "compression_type": self.compression},
            acks="all",
            enable_idempotence=True,
            message_timeout_ms=max(1, int(self.delivery_timeout * 1000)),
            socket_keepalive_enable=True,
        )

    def writer_codec(self) -> Codec:
        """The events codec in the configured wire format (for Confluent: the schema id is
        looked up in the registry now, once).

        Raises:
            SettingsError: no registry, the registry lacks the schema, or does not answer.
        """
        try:
            registry = registry_settings(self.schema_registry_url)
            return writer_codec(subject(CONVERSATION_EVENT), self.topic, self.wire_format, registry)
        except RegistryError as exc:
            raise SettingsError(f"cannot write the {self.wire_format.value} wire format: {exc}") from None


def load_settings(*, flags: Mapping[str, str] | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from the environment with ``overrides`` (flags; None means not given);
    ``flags``: the command's flag of each field it has one for (a refusal names the flag
    and the variable, or the variable alone).

    Raises:
        SettingsError: a value is invalid; the message names the setting.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    secrets_file = given.pop("webhook_secrets_file", None)  # "": not read (produce)
    if secrets_file is None:
        secrets_file = os.environ.get(ENV_SECRETS_FILE)
    if secrets_file:
        given["webhook_secrets"] = _secrets_from(secrets_file, given, flags or {})
    try:
        if "kafka" not in given:  # no flags: the environment's (and CONVMETRICS_KAFKA_CONFIG's)
            given["kafka"] = kafka.load([])
        given["kafka"] = dict(given["kafka"])
    except KafkaSettingsError as exc:
        raise SettingsError(f"invalid settings: {exc}") from None
    try:
        return GatewaySettings(**given)
    except ValidationError as exc:
        problems = "; ".join(_problem(e, flags or {}) for e in exc.errors(include_url=False))
        raise SettingsError(f"invalid settings: {problems}") from None


#: a file of the webhook secrets (a Secret volume): not in the environment, `ps` or `docker inspect`
ENV_SECRETS_FILE = "CONVMETRICS_WEBHOOK_SECRETS_FILE"


def _secrets_from(path: str, given: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    """The webhook secrets of a file (comma-, space- or line-separated; `#` comments), as the
    variable takes them; SettingsError names the file, never a secret."""
    named = f"{flags.get('webhook_secrets_file', '--webhook-secrets-file')} (or {ENV_SECRETS_FILE}) {path}"
    if given.get("webhook_secrets") or os.environ.get("CONVMETRICS_WEBHOOK_SECRETS"):
        raise SettingsError(f"invalid settings: {named}: give the secrets or a file of them, not both")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"invalid settings: {named}: cannot read it: {reason}") from None
    secrets = [s for line in text.splitlines() for s in line.split("#", 1)[0].replace(",", " ").split()]
    if not secrets:
        raise SettingsError(f"invalid settings: {named}: holds no secret")
    for number, secret in enumerate(secrets, 1):
        try:
            parse_secret(secret)
        except SettingsError as exc:
            raise SettingsError(f"invalid settings: {named}: secret {number}: {exc}") from None
    return ",".join(secrets)


#: fields whose value an error never shows (passwords, secrets)
_SECRET_FIELDS = frozenset({"webhook_secrets", "kafka"})


def _problem(error: Any, flags: Mapping[str, str]) -> str:
    """One refused setting, named as the user gave it (its flag, where the command has one,
    and its variable), with the value."""
    field = str(error["loc"][0]) if error["loc"] else "?"
    env = "CONVMETRICS_KAFKA_<KEY>" if field == "kafka" else f"CONVMETRICS_{field.upper()}"
    named = f"{flags[field]} (or {env})" if field in flags else env
    if error["type"] == "missing":  # its input is every other setting: never shown
        local = " (`convmetrics broker` starts a local Kafka)" if field == "bootstrap_servers" else ""
        return f"{named}: required{local}"
    shown = "" if field in _SECRET_FIELDS else f", got {error['input']!r}"
    msg = str(error["msg"]).removeprefix("Value error, ")  # a validator's own words
    return f"{named}: {msg}{shown}"
