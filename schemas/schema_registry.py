"""The Confluent-compatible schema registry: settings, a thin client, and `schemas push`.

The repo stays the source of truth: `push` registers every shipped version of a subject
under its topic's registry subject (TopicNameStrategy, ``<topic>-value``), in order, sets
that subject's compatibility to FULL_TRANSITIVE and verifies that what the registry then
holds is exactly the pinned versions. Writers register nothing: they look their schema's
id up once, at start (`RegistryClient.schema_id`). Readers ask for an id's schema once per
id (`RegistryClient.schema_by_id`), never per record.

The HTTP client is confluent-kafka's own `SchemaRegistryClient` (retries, basic auth, TLS,
its own caches): the same one the pipelines' Python readers use.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from schemas.codec import Codec, fingerprint_of
from schemas.compat import full_name
from schemas.confluent import WireFormat, subject_name
from schemas.exceptions import (
    RegistryError,
    RegistryMismatchError,
    RegistrySettingsError,
    RegistryUnavailableError,
    SchemaNotRegisteredError,
)
from schemas.registry import SchemaVersion, Subject, pin_key
from schemas.urls import redacted

ENV_URL = "CONVMETRICS_SCHEMA_REGISTRY_URL"
ENV_USER_INFO = "CONVMETRICS_SCHEMA_REGISTRY_USER_INFO"  # user:password (basic auth)
ENV_CA = "CONVMETRICS_SCHEMA_REGISTRY_CA"  # PEM file of the CA certificates to trust
ENV_CERT = "CONVMETRICS_SCHEMA_REGISTRY_CERT"  # client certificate (PEM), for mutual TLS
ENV_KEY = "CONVMETRICS_SCHEMA_REGISTRY_KEY"  # its private key (PEM)
COMPATIBILITY = "FULL_TRANSITIVE"

#: each subject of the contract and the topic it is written to by default
DEFAULT_TOPICS: dict[str, str] = {
    "conversation_event": "conversation-events",
    "closure_metrics": "conversation-closure-metrics",
    "metric_rows": "conversation-metric-rows",
}
#: the `schemas push` flag naming each subject's topic
PUSH_TOPIC_FLAGS: dict[str, str] = {
    "conversation_event": "--events-topic",
    "closure_metrics": "--metrics-topic",
    "metric_rows": "--metric-rows-topic",
}

T = TypeVar("T")


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry is and how to reach it; prints without the password."""

    url: str
    user_info: str | None = field(default=None, repr=False)
    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None
    #: seconds per HTTP request; a registry that does not answer is an error, not a hang
    timeout: float = 10.0

    def client_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout, "max.retries": 2,
                                "retries.wait.ms": 200}  # fmt: skip
        for key, value in (
            ("basic.auth.user.info", self.user_info),
            ("ssl.ca.location", self.ca_location),
            ("ssl.certificate.location", self.certificate_location),
            ("ssl.key.location", self.key_location),
        ):
            if value:
                conf[key] = value
        return conf


def registry_settings(
    url: str | None = None, environ: Mapping[str, str] | None = None
) -> RegistrySettings | None:
    """The registry settings from `url` (a flag) or the environment; None when no URL is set."""
    env = os.environ if environ is None else environ
    url = (url or env.get(ENV_URL) or "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise RegistrySettingsError(
            f"schema registry URL {redacted(url)!r} ({ENV_URL} or --schema-registry-url): use http(s)://"
        )
    user_info = env.get(ENV_USER_INFO) or None
    if user_info is not None and ":" not in user_info:
        raise RegistrySettingsError(f"{ENV_USER_INFO} must be USER:PASSWORD")
    return RegistrySettings(
        url.rstrip("/"),
        user_info,
        env.get(ENV_CA) or system_cas(env),
        env.get(ENV_CERT) or None,
        env.get(ENV_KEY) or None,
    )


def system_cas(env: Mapping[str, str]) -> str | None:
    """The system's CA certificates (an internal CA added to the OS or the image's store is
    trusted, as by Kafka's TLS): the default CA file, else directory, of this Python's
    OpenSSL. None where the client would choose itself: `SSL_CERT_FILE` or `SSL_CERT_DIR`
    set (it reads them), or no system store (it falls back to certifi's bundle)."""
    if env.get("SSL_CERT_FILE") or env.get("SSL_CERT_DIR"):
        return None
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return paths.cafile
    return paths.capath if paths.capath and os.path.isdir(paths.capath) else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--schema-registry-url` on a command that may talk to the registry."""
    parser.add_argument(
        "--schema-registry-url",
        default=None,
        metavar="URL",
        help=f"Confluent-compatible schema registry (env {ENV_URL}), e.g. http://registry:8081 or "
        "Apicurio's http://registry:8080/apis/ccompat/v7; basic auth in "
        f"{ENV_USER_INFO}=USER:PASSWORD, TLS in {ENV_CA}, {ENV_CERT} and {ENV_KEY} (PEM files)",
    )


@dataclass(frozen=True)
class Pushed:
    """One subject after `push`: registry subject, and (our version, registry id) in order."""

    registry_subject: str
    subject: str
    ids: tuple[tuple[int, int], ...]
    registered: int  # versions this push added (0 on a repeated push)


class RegistryClient:
    """The few registry calls this project makes, with errors that name what to do."""

    def __init__(self, settings: RegistrySettings) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.settings = settings
        self.url = settings.url
        #: the URL as errors show it (credentials in it replaced by ***)
        self.shown = redacted(settings.url)
        for name in ("httpx", "httpx2"):  # the HTTP client logs every request at INFO
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
        try:
            self._client = SchemaRegistryClient(settings.client_config())
        except (ValueError, TypeError, OSError) as exc:
            raise RegistrySettingsError(f"schema registry settings for {self.shown}: {exc}") from None

    def _call(self, what: str, call: Callable[[], T]) -> T:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return call()
        except SchemaRegistryError:
            raise
        except Exception as exc:  # httpx transport errors, TLS, timeouts: all "did not answer"
            raise RegistryUnavailableError(
                f"schema registry at {self.shown} did not answer ({what}): {type(exc).__name__}: {exc}"
            ) from None

    def schema_id(self, topic: str, version: SchemaVersion) -> int:
        """The registry id of `version` under `<topic>-value`, looked up (never registered).

        Raises:
            SchemaNotRegisteredError: the registry lacks it (run `convmetrics schemas push`).
            RegistryUnavailableError: the registry did not answer.
        """
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        name = subject_name(topic)
        try:
            found = self._call(
                f"looking up {name}",
                lambda: self._client.lookup_schema(name, Schema(schema_str(version), "AVRO")),
            )
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaNotRegisteredError(
                    f"the schema registry at {self.shown} has no {version.subject} v{version.version} under "
                    f"subject {name}: run `convmetrics schemas push` (with "
                    f"{PUSH_TOPIC_FLAGS.get(version.subject, '--events-topic')} {topic}) before writing "
                    f"the Confluent wire format ({exc})"
                ) from None
            raise RegistryError(f"schema registry at {self.shown}: looking up {name}: {exc}") from None
        schema_id = found.schema_id
        if schema_id is None:
            raise RegistryError(
                f"schema registry at {self.shown} answered the lookup of {name} without an id"
            )
        return int(schema_id)

    def schema_by_id(self, schema_id: int) -> Any | None:
        """The schema (parsed JSON) the registry holds under `schema_id`, or None if none.

        Raises:
            RegistryUnavailableError: the registry did not answer.
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._call(f"schema id {schema_id}", lambda: self._client.get_schema(schema_id))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise RegistryError(f"schema registry at {self.shown}: schema id {schema_id}: {exc}") from None
        if (schema.schema_type or "AVRO") != "AVRO" or schema.schema_str is None:
            return {"type": schema.schema_type}  # not Avro: foreign by its (missing) name
        return json.loads(schema.schema_str)

    def registered(self, name: str) -> list[tuple[int, Any]]:
        """(registry version, schema JSON) of every version under subject `name`, oldest first."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            versions = self._call(f"versions of {name}", lambda: self._client.get_versions(name))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return []
            raise RegistryError(f"schema registry at {self.shown}: versions of {name}: {exc}") from None
        out = []
        for n in sorted(versions):
            got = self._call(f"{name} version {n}", lambda n=n: self._client.get_version(name, n))  # type: ignore[misc]
            out.append((n, json.loads(got.schema.schema_str or "null")))
        return out

    def push(self, subject: Subject, topic: str, pins: Mapping[str, str]) -> Pushed:
        """Register every version of `subject` under `<topic>-value`, in order, with
        FULL_TRANSITIVE compatibility, and verify the registry against the pins.

        Raises:
            RegistryMismatchError: the registry holds another schema under that subject.
            RegistryUnavailableError, RegistryError: the registry did not answer, or refused.
        """
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        name = subject_name(topic)
        before = self.registered(name)
        raise_mismatches(name, subject, pins, before)
        ids: list[tuple[int, int]] = []
        try:
            for v in subject.versions:
                schema = Schema(schema_str(v), "AVRO")
                registered_id: int = self._call(f"registering {name}", functools.partial(
                    self._client.register_schema, name, schema))  # fmt: skip
                ids.append((v.version, registered_id))
                if len(ids) == 1:  # a subject exists once it has a version
                    self._call(
                        f"compatibility of {name}",
                        lambda: self._client.set_compatibility(name, COMPATIBILITY),
                    )
        except SchemaRegistryError as exc:
            raise RegistryError(
                f"schema registry at {self.shown} refused {subject.name} under {name}: {exc}"
            ) from None
        after = self.registered(name)
        raise_mismatches(name, subject, pins, after, complete=True)
        level = self._call(f"compatibility of {name}", lambda: self._client.get_compatibility(name))
        if level != COMPATIBILITY:
            raise RegistryMismatchError(
                f"registry subject {name} has compatibility {level}, not {COMPATIBILITY}"
            )
        return Pushed(name, subject.name, tuple(ids), len(after) - len(before))


def schema_str(version: SchemaVersion) -> str:
    """The schema text registered for a version: its file's JSON, docs included."""
    return json.dumps(version.raw)


def mismatches(
    name: str,
    subject: Subject,
    pins: Mapping[str, str],
    registered: list[tuple[int, Any]],
    *,
    complete: bool = False,
) -> list[str]:
    """What is wrong with what a registry holds under subject `name` (pure).

    Every registry version must be a pinned version of `subject`, in our order; with
    `complete`, every pinned version must be there too.
    """
    pinned = [pins.get(pin_key(subject.name, v.version)) for v in subject.versions]
    problems = [
        f"{subject.name} v{v.version} is not pinned in fingerprints.json: run `convmetrics schemas check`"
        for v, fp in zip(subject.versions, pinned, strict=True)
        if fp is None
    ]
    order = {fp: i for i, fp in enumerate(pinned)}
    last = -1
    for n, raw in registered:
        fp = _fingerprint(raw)
        if fp not in order:
            problems.append(
                f"registry subject {name} version {n} holds {full_name(raw) or 'a schema'} with "
                f"fingerprint {fp}, which is not a version of {subject.name} in this repo "
                f"(pinned: {', '.join(map(str, pinned))})"
            )
        elif order[fp] == last:  # the same version again, as another text (docs, defaults)
            problems.append(
                f"registry subject {name} version {n} holds {subject.name} "
                f"v{subject.versions[order[fp]].version} again, registered from another text of it"
            )
        elif order[fp] < last:
            problems.append(f"registry subject {name} version {n} holds {subject.name} out of order")
        else:
            last = order[fp]
    if complete:
        held = {_fingerprint(raw) for _, raw in registered}
        problems.extend(
            f"registry subject {name} lacks {subject.name} v{v.version} (fingerprint {fp})"
            for v, fp in zip(subject.versions, pinned, strict=True)
            if fp is not None and fp not in held
        )
    return problems


def _fingerprint(raw: Any) -> str:
    try:
        return fingerprint_of(raw).hex()
    except Exception:  # not an Avro schema at all
        return "(not Avro)"


def raise_mismatches(
    name: str,
    subject: Subject,
    pins: Mapping[str, str],
    registered: list[tuple[int, Any]],
    *,
    complete: bool = False,
) -> None:
    problems = mismatches(name, subject, pins, registered, complete=complete)
    if problems:
        raise RegistryMismatchError("; ".join(problems))


def writer_codec(
    subject: Subject, topic: str, wire_format: WireFormat, registry: RegistrySettings | None, **codec: Any
) -> Codec:
    """The codec a writer of `topic` uses: single-object, or Confluent with its schema's id
    looked up once, now (a writer never registers: `convmetrics schemas push` does).

    Raises:
        RegistryError: Confluent without a registry; SchemaNotRegisteredError or
            RegistryUnavailableError from the lookup (each says what to do).
    """
    if wire_format is WireFormat.SINGLE_OBJECT:
        return Codec(subject, **codec)
    if registry is None:
        raise RegistryError(
            f"--wire-format {wire_format.value} needs a schema registry: pass --schema-registry-url "
            f"or set {ENV_URL}"
        )
    client = RegistryClient(registry)
    number = codec.get("writer_version")
    version = subject.latest if number is None else subject.version(number)
    schema_id = client.schema_id(topic, version)
    return Codec(subject, schema_id=schema_id, resolve_id=client.schema_by_id, **codec)


def reader_resolver(registry: RegistrySettings | None) -> Callable[[int], Any] | None:
    """`Codec(resolve_id=...)` for a reader: the registry's schema of an id, or None without one."""
    return None if registry is None else RegistryClient(registry).schema_by_id
