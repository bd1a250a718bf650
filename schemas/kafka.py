"""Kafka client settings, once, for every client this project runs.

Security and tuning settings (SASL, TLS, timeouts, ...) reach every client (the gateway's
producer and admin, the consumer, its DLQ producer, the metrics-topic publishers, the
schema-topic reader and writer, `produce`, `dlq replay`, `demo`) from three places, each
overriding the one before:

1. the environment: `CONVMETRICS_KAFKA_<SETTING>`, the librdkafka key upper-cased with
   dots as underscores (`CONVMETRICS_KAFKA_SECURITY_PROTOCOL=SASL_SSL`);
2. `--kafka-config FILE`: a Java properties file, as users keep for their Kafka tools
   (read by `javaproperties`: `key=value`, `key: value`, `#`/`!` comments, continuations);
3. `--kafka KEY=VALUE`, repeatable.

Keys are checked at start: keys only Java clients understand are refused with the
librdkafka key to use instead, the project's own durability settings (acks=all,
idempotence, offsets kept with the metrics) cannot be changed, and librdkafka itself
checks names and values. Secret values never reach logs, errors or reprs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import javaproperties
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from schemas.exceptions import SchemaError, TopicNotMadeError

ENV_PREFIX = "CONVMETRICS_KAFKA_"
ENV_CONFIG = "CONVMETRICS_KAFKA_CONFIG"  # a properties file, as --kafka-config
#: variables under ENV_PREFIX that are not librdkafka settings, left alone: the tests' and
#: compose's Kafka image (CONVMETRICS_KAFKA_IMAGE), and what Kubernetes injects for a Service
#: named convmetrics-kafka (CONVMETRICS_KAFKA_SERVICE_HOST, _PORT, _PORT_9092_TCP, ...) or
#: convmetrics-kafka-<more> (Strimzi's convmetrics-kafka-bootstrap: ..._BOOTSTRAP_SERVICE_HOST,
#: ..._BOOTSTRAP_PORT_9092_TCP_ADDR); librdkafka has no setting named image, port or service,
#: nor one ending so
_NOT_SETTINGS = re.compile(
    r"(image|port|service)(\.|$)"
    r"|.*\.(service\.(host|port)(\..*)?|port(\.\d+\.(tcp|udp|sctp)(\..*)?)?)$"
)
#: how long a consumer's close may wait for its group coordinator (see close_consumer)
CLOSE_TIMEOUT_S = 10.0

#: Java client keys librdkafka does not know, and what to use instead
JAVA_ONLY: dict[str, str] = {
    "sasl.jaas.config": "sasl.username and sasl.password (with sasl.mechanism)",
    "ssl.truststore.location": "ssl.ca.location (a PEM file of the CA certificates)",
    "ssl.truststore.password": "ssl.ca.location (PEM needs no password)",
    "ssl.truststore.type": "ssl.ca.location (PEM)",
    "ssl.keystore.type": "ssl.keystore.location (PKCS#12) or ssl.certificate.location and ssl.key.location",
    "ssl.enabled.protocols": "nothing: librdkafka negotiates TLS 1.2 and later",
    "ssl.protocol": "nothing: librdkafka negotiates TLS 1.2 and later",
    "sasl.login.callback.handler.class": "sasl.oauthbearer.method=oidc and its sasl.oauthbearer.* keys",
    "sasl.client.callback.handler.class": "sasl.oauthbearer.method=oidc and its sasl.oauthbearer.* keys",
    "key.serializer": "nothing: this project encodes its records itself",
    "value.serializer": "nothing: this project encodes its records itself",
    "key.deserializer": "nothing: this project decodes its records itself",
    "value.deserializer": "nothing: this project decodes its records itself",
    "ssl.keymanager.algorithm": "nothing (a Java setting)",
    "ssl.trustmanager.algorithm": "nothing (a Java setting)",
    "security.providers": "nothing (a Java setting)",
}

_ACKS = "every producer here waits for acks=all: a 2xx means the event is durably in Kafka"
#: settings this project fixes itself, and why they cannot be changed
FIXED: dict[str, str] = {
    "bootstrap.servers": "pass --bootstrap-servers (or CONVMETRICS_BOOTSTRAP_SERVERS)",
    "metadata.broker.list": "pass --bootstrap-servers (or CONVMETRICS_BOOTSTRAP_SERVERS)",
    "group.id": "pass --group",
    "acks": _ACKS,
    "request.required.acks": _ACKS,
    "enable.idempotence": "every producer here is idempotent: a retry never writes a record twice",
    "enable.auto.commit": "the consumer keeps its offsets in the store, with the metrics they produced",
    "enable.auto.offset.store": "the consumer keeps its offsets in the store, with the metrics they produced",
}

_SECRET = re.compile(
    r"password|passphrase|secret|credential|key\.pem|jaas|oauthbearer\.config|token", re.IGNORECASE
)


#: where the settings check's own client logs (nowhere: its refusal is the exception)
log = logging.getLogger(__name__)


#: librdkafka's warnings about a group or transaction coordinator still loading, which it
#: retries by itself (a cluster just started): INFO, not WARNING (they read as failures)
SETTLING = re.compile(r"Coordinator load in progress: retrying|Coordinator not available: retrying")


class Settling(logging.Filter):
    """librdkafka's `SETTLING` warnings said at INFO (dropped where INFO is off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and SETTLING.search(record.getMessage()):
            record.levelno, record.levelname = logging.INFO, "INFO"  # a cluster just started
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


class OncePerMinute(logging.Filter):
    """librdkafka logs a line per failed reconnect, each with its own timing (`after 313ms`):
    a line is let through once per `every` seconds, its numbers left out of the comparison
    (216 lines in 45 s from a gateway with a wrong password, on stderr, past logging)."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        if now - self._seen.get(key, -self.every) < self.every:
            return False
        if len(self._seen) > 1000:  # bounded: a long run's distinct lines
            self._seen.clear()
        self._seen[key] = now
        return True


#: the logger of librdkafka's own lines, of every client `client_config` makes
KAFKA_LOG = logging.getLogger("librdkafka")
KAFKA_LOG.addFilter(Settling())
KAFKA_LOG.addFilter(OncePerMinute())

_QUIET = logging.getLogger("convmetrics.kafka.check")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class KafkaSettingsError(SchemaError):
    """A Kafka client setting that cannot be used; the message names it and its source."""


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key))


def redacted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with secret values replaced, for logs and errors."""
    return {k: ("***" if is_secret(k) else v) for k, v in settings.items()}


class KafkaSettings(Mapping[str, str]):
    """Checked librdkafka settings; prints without secrets."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"KafkaSettings({redacted(self._values)!r})"


def client_config(
    bootstrap: str, kafka: Mapping[str, str] | None, *, tuning: Mapping[str, Any] | None = None, **own: Any
) -> dict[str, Any]:
    """A client's librdkafka config: the bootstrap servers, the client's `tuning` defaults
    (`linger_ms`, `compression_type`: a user's setting of the same key wins), the user's
    settings, then the client's own (`own`: `acks="all"`, ...), which always win. Keys are
    spelled with underscores for dots."""
    return {
        "logger": KAFKA_LOG,  # librdkafka's own lines through logging, once a minute each
        "bootstrap.servers": bootstrap,
        **{k.replace("_", "."): v for k, v in (tuning or {}).items()},
        **(kafka or {}),
        **{k.replace("_", "."): v for k, v in own.items()},
    }


def unreachable(bootstrap: str, timeout: float, exc: KafkaException) -> str:
    """The line a one-shot step says when the cluster did not answer: librdkafka's own
    reason (`Failed to get metadata: Local: Broker transport failure`), not the error's repr."""
    err = exc.args[0] if exc.args else None
    reason = err.str() if isinstance(err, KafkaError) else str(exc)
    return f"Kafka at {bootstrap} did not answer within {timeout:g} s: {reason}"


def create_topic(
    bootstrap: str,
    topic: str,
    *,
    what: str,
    partitions: int = -1,
    replication_factor: int = -1,
    config: Mapping[str, str] | None = None,
    kafka: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> bool:
    """Create `topic` unless it exists; True when this call made it. -1: the broker's
    default partition count or replication factor (a secured or managed cluster creates no
    topic on first use and refuses fewer replicas than its minimum). Another client making it
    meanwhile is no error.

    Raises:
        TopicNotMadeError: naming it as `what`; `unreachable` when the cluster did not answer.
    """
    admin = AdminClient(client_config(bootstrap, kafka))
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicNotMadeError(unreachable(bootstrap, timeout, exc), unreachable=True) from None
    if topic in meta.topics and meta.topics[topic].error is None:
        return False
    future = admin.create_topics([NewTopic(topic, partitions, replication_factor, config=dict(config or {}))])
    try:
        future[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False  # another client made it meanwhile
        raise TopicNotMadeError(
            f"cannot create {what} {topic} on {bootstrap} (create it, or allow this client to): {exc}"
        ) from None
    except FutureTimeout:
        raise TopicNotMadeError(f"creating {what} {topic} took longer than {timeout:g} s") from None
    return True


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The CONVMETRICS_KAFKA_<KEY> variables as librdkafka settings (`_` for `.`), but for
    the ones that are something else (`_NOT_SETTINGS`)."""
    out = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and name != ENV_CONFIG and len(name) > len(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("_", ".")
            if not _NOT_SETTINGS.match(key):
                out[key] = value
    return out


def from_file(path: str) -> dict[str, str]:
    try:
        with Path(path).open(encoding="utf-8") as f:
            loaded: dict[str, str] = javaproperties.load(f)
    except OSError as exc:
        raise KafkaSettingsError(f"--kafka-config {path}: cannot read it: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise KafkaSettingsError(f"--kafka-config {path}: not a properties file: {exc}") from None
    return {k.strip(): v.strip() for k, v in loaded.items()}


def from_flags(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            shown = "text that names a secret (not shown)" if is_secret(pair) else repr(pair)
            raise KafkaSettingsError(f"--kafka expects KEY=VALUE, got {shown}")
        out[key.strip()] = value.strip()
    return out


def load(
    flags: list[str] | None = None, config_file: str | None = None, environ: Mapping[str, str] | None = None
) -> KafkaSettings:
    """The settings of every Kafka client: flags over file over environment, checked.

    Raises:
        KafkaSettingsError: a setting is refused; the message names the key and where it came
            from (never a secret value).
    """
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_CONFIG) or None
    sources: dict[str, str] = {}
    merged: dict[str, str] = {}
    layers: list[tuple[str, dict[str, str]]] = [("environment", from_environment(environ))]
    if config_file:
        layers.append((f"--kafka-config {config_file}", from_file(config_file)))
    layers.append(("--kafka", from_flags(flags or [])))
    for source, values in layers:
        for key, value in values.items():
            merged[key], sources[key] = value, source
    for key in merged:
        where = sources[key]
        if key in JAVA_ONLY:
            raise KafkaSettingsError(
                f"Kafka setting {key!r} ({where}) is a Java client setting that librdkafka does not "
                f"understand; use {JAVA_ONLY[key]} instead"
            )
        if key in FIXED:
            raise KafkaSettingsError(f"Kafka setting {key!r} ({where}) cannot be set: {FIXED[key]}")
    check(merged, sources)
    return KafkaSettings(merged)


def check(settings: Mapping[str, str], sources: Mapping[str, str]) -> None:
    """Let librdkafka judge names and values: a client made with them and no broker (it
    connects to nothing) refuses an unknown key or a bad value with the key's name."""
    if not settings:
        return
    try:
        Producer({**settings, "logger": _QUIET}).flush(0)
    except (KafkaException, ValueError, TypeError) as exc:
        err = exc.args[0] if exc.args else exc
        message = err.str() if hasattr(err, "str") else str(err)
        for key, value in settings.items():
            if is_secret(key) and value:  # as a whole word: a password "p" leaves "Producer" be
                message = re.sub(_word(value), "***", message)
        # the keys the message names, else those whose value it quotes, else all of them
        named = [k for k in settings if k in message] or [
            k for k, v in settings.items() if not is_secret(k) and v and re.search(_word(v), message)
        ]
        where = ", ".join(f"{k} ({sources.get(k, '?')})" for k in named or settings)
        raise KafkaSettingsError(
            f"librdkafka refuses {where if named else f'the Kafka settings ({where})'}: {message}"
        ) from None


def _word(value: str) -> str:
    """A regex of `value` where no letter or digit goes on either side of it."""
    return rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--kafka KEY=VALUE` and `--kafka-config FILE` on a command that talks to Kafka."""
    parser.add_argument(
        "--kafka",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for every Kafka client of the command, repeatable "
        "(--kafka security.protocol=SASL_SSL --kafka sasl.mechanism=SCRAM-SHA-512); "
        f"overrides --kafka-config, which overrides {ENV_PREFIX}<KEY> variables "
        f"({ENV_PREFIX}SASL_USERNAME=... for sasl.username)",
    )
    parser.add_argument(
        "--kafka-config",
        metavar="FILE",
        default=None,
        help=f"a Java-style properties file of librdkafka settings (env {ENV_CONFIG}); "
        "Java-only keys such as sasl.jaas.config are refused with the librdkafka key to use",
    )


def from_args(args: argparse.Namespace) -> KafkaSettings:
    return load(getattr(args, "kafka", None) or [], getattr(args, "kafka_config", None))


class DeliveryErrors:
    """An `on_delivery` callback keeping the errors of the records Kafka refused (a topic
    this client may not write, a record larger than the topic takes): librdkafka reports
    those as delivered, with an error, and `flush()` counts them done."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.errors.append(str(err.str()))


class ErrorReport:
    """A client's `error_cb`: errors that settings cause (refused credentials, failed TLS) are
    logged as such, naming the settings to check; every kind of error is logged at most once
    per `every` seconds (librdkafka reports each failed reconnect). `last` holds the latest
    explanation, for a readiness answer."""

    def __init__(self, log: logging.Logger, *, every: float = 60.0) -> None:
        self.log = log
        self.every = every
        self.last: str | None = None
        self.last_at: float | None = None  # time.monotonic() of `last`
        self._logged: dict[int, float] = {}

    def __call__(self, err: KafkaError) -> None:
        explained = explain(err)
        now = time.monotonic()
        if explained is not None:
            self.last, self.last_at = explained, now
        code = err.code()
        if now - self._logged.get(code, -self.every) < self.every:
            return
        self._logged[code] = now
        if explained is not None:
            self.log.error("%s", explained)
        else:
            self.log.warning("Kafka: %s", err.str())


def explain(err: KafkaError) -> str | None:
    """What to check for a client error that the settings cause, or None."""
    if err.code() == KafkaError._AUTHENTICATION:
        check = "sasl.username, sasl.password and sasl.mechanism"
        return f"Kafka refused the credentials: check {check} ({err.str()})"
    if err.code() == KafkaError._SSL:
        return f"TLS with Kafka failed: check security.protocol and ssl.ca.location ({err.str()})"
    return None


def close_consumer(consumer: Consumer, timeout: float = CLOSE_TIMEOUT_S) -> bool:
    """Close `consumer`, waiting at most `timeout` seconds; False if it did not finish.

    librdkafka's close leaves the group through its coordinator, and when no broker answers
    it can retry the coordinator query forever (librdkafka #3740, open): a consumer stopped
    together with its broker (a killed demo, a lost cluster) then never exits. The close
    runs on a daemon thread instead; past the timeout the process goes on without it, and the
    group expires the member after session.timeout.ms. Nothing is lost: our consumers keep
    their offsets in the store, committed before they close.
    """
    closing = threading.Thread(target=consumer.close, name="kafka-consumer-close", daemon=True)
    closing.start()
    closing.join(timeout)
    if closing.is_alive():
        log.warning(
            "Kafka: the consumer did not leave its group within %g s (no broker answers?); "
            "stopping without it, the group drops the member after its session timeout",
            timeout,
        )
        return False
    return True
