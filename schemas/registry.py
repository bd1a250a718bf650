"""The registry of writer schemas is the `schemas/` folder itself.

Layout: one folder per subject, one immutable file per version (`<subject>/v<N>.avsc`),
and `fingerprints.json` pinning each published version's CRC-64-AVRO fingerprint.
Every schema is parsed once, when its subject is first loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.exceptions import ContractError

SCHEMA_DIR = Path(__file__).resolve().parent
PINS_FILE = "fingerprints.json"
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One published version of a subject."""

    subject: str
    version: int
    path: Path
    raw: dict[str, Any] = field(repr=False)
    parsed: Any = field(repr=False)
    canonical: str = field(repr=False)
    fingerprint: bytes  # 8 bytes, little-endian, exactly as framed on the wire

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @property
    def digest(self) -> str:
        """SHA-256 of the whole schema (its JSON, keys sorted): what the fingerprint leaves
        out too, docs, defaults and aliases, which readers and registries see."""
        text = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Subject:
    """All versions of one subject, oldest first."""

    name: str
    versions: tuple[SchemaVersion, ...]

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]

    def version(self, number: int) -> SchemaVersion:
        for v in self.versions:
            if v.version == number:
                return v
        raise ContractError(f"subject {self.name} has no version {number}")


def load_version(subject: str, version: int, path: Path) -> SchemaVersion:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = fastavro.parse_schema(raw, _write_hint=False)
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise ContractError(f"{path}: not a valid Avro schema: {exc}") from exc
    canonical = to_parsing_canonical_form(raw)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(subject, version, path, raw, parsed, canonical, fp)


def load_subject(name: str, schema_dir: Path = SCHEMA_DIR) -> Subject:
    folder = schema_dir / name
    found: list[tuple[int, Path]] = []
    for path in folder.glob("*.avsc"):
        m = _VERSION_FILE.match(path.name)
        if not m:
            raise ContractError(f"{path}: schema files are named v<N>.avsc")
        found.append((int(m.group(1)), path))
    if not found:
        raise ContractError(f"no schema versions under {folder}")
    found.sort()
    return Subject(name, tuple(load_version(name, n, p) for n, p in found))


def subject_names(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    return sorted(p.name for p in schema_dir.iterdir() if p.is_dir() and any(p.glob("*.avsc")))


def load_pins(schema_dir: Path = SCHEMA_DIR) -> dict[str, str]:
    path = schema_dir / PINS_FILE
    if not path.exists():
        return {}
    pins: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return pins


def pin_key(subject: str, version: int) -> str:
    return f"{subject}/v{version}"


def file_pin_key(subject: str, version: int) -> str:
    """The pin of a version's whole file (`SchemaVersion.digest`), beside its fingerprint's."""
    return f"{subject}/v{version}.avsc"


@cache
def subject(name: str) -> Subject:
    """The shipped subject `name`, loaded and parsed once per process."""
    return load_subject(name)
