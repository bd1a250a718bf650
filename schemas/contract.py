"""The checks `convmetrics schemas check` runs over a schema folder (pure but for reading it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.compat import aliases, full_name, incompatibilities, named_types
from schemas.exceptions import ContractError
from schemas.registry import (
    PINS_FILE,
    SCHEMA_DIR,
    Subject,
    file_pin_key,
    load_pins,
    load_subject,
    pin_key,
    subject_names,
)


def check_subject(subject: Subject, pins: dict[str, str]) -> list[str]:
    """Problems of one subject: changed or unpinned versions, and FULL_TRANSITIVE breaks."""
    problems: list[str] = []
    for v in subject.versions:
        pinned = pins.get(pin_key(subject.name, v.version))
        if pinned is None:
            problems.append(
                f"{subject.name} v{v.version}: not pinned in {PINS_FILE} "
                f"(run `convmetrics schemas pin` once it is final)"
            )
        elif pinned != v.fingerprint_hex:
            problems.append(
                f"{subject.name} v{v.version}: published schema changed: fingerprint "
                f"{v.fingerprint_hex} != pinned {pinned}; add a new version instead"
            )
        elif (whole := pins.get(file_pin_key(subject.name, v.version))) is None:
            problems.append(
                f"{subject.name} v{v.version}: its file is not pinned in {PINS_FILE} "
                f"(run `convmetrics schemas pin`)"
            )
        elif whole != v.digest:
            problems.append(
                f"{subject.name} v{v.version}: published schema file changed (a doc, default or "
                f"alias: the fingerprint leaves them out, but readers fill in defaults and a "
                f"registry takes the text as a new version); add a new version instead"
            )
    for v in subject.versions:
        problems.extend(f"{subject.name} v{v.version}: {issue}" for issue in union_defaults(v.raw))
    for old, new in zip(subject.versions, subject.versions[1:], strict=False):
        problems.extend(
            f"{subject.name} v{new.version}: {issue}" for issue in renamed_types(old.raw, new.raw)
        )
    for w in subject.versions:
        for r in subject.versions:
            if w.version == r.version:
                continue
            for issue in incompatibilities(w.raw, r.raw):
                problems.append(
                    f"{subject.name}: data written with v{w.version} cannot be read with "
                    f"v{r.version}: {issue}"
                )
    return problems


def check_folder(schema_dir: Path = SCHEMA_DIR) -> tuple[list[Subject], list[str]]:
    """All subjects of a folder and every problem found in it."""
    pins = load_pins(schema_dir)
    subjects: list[Subject] = []
    problems: list[str] = []
    unread: set[str] = set()  # subjects whose files did not load: their pins are not judged
    for name in subject_names(schema_dir):
        try:
            subj = load_subject(name, schema_dir)
        except ContractError as exc:
            problems.append(str(exc))
            unread.add(name)
            continue
        subjects.append(subj)
        problems.extend(check_subject(subj, pins))
    known = {key(s.name, v.version) for s in subjects for v in s.versions for key in (pin_key, file_pin_key)}
    problems.extend(
        f"{key}: pinned in {PINS_FILE} but its file is gone; published versions stay"
        for key in sorted(set(pins) - known)
        if key.split("/", 1)[0] not in unread
    )
    return subjects, problems


def pin_new_versions(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Pin versions that have no pin yet; never touch an existing pin. Returns added keys."""
    pins = load_pins(schema_dir)
    added: list[str] = []
    for name in subject_names(schema_dir):
        for v in load_subject(name, schema_dir).versions:
            for key, value in (
                (pin_key(name, v.version), v.fingerprint_hex),
                (file_pin_key(name, v.version), v.digest),
            ):
                if key not in pins:
                    pins[key] = value
                    added.append(key)
    if added:
        text = json.dumps(dict(sorted(pins.items())), indent=2) + "\n"
        (schema_dir / PINS_FILE).write_text(text, encoding="utf-8")
    return added


def renamed_types(old: Any, new: Any) -> list[str]:
    """Named types whose full name changed from one version to the next without an alias of
    the old name: schema resolution compares unqualified names, so a new namespace passes
    `incompatibilities`, but code generated from the schema, and a registry that names its
    subjects by record (RecordNameStrategy), know a type by its full name."""
    before, after = named_types(old), named_types(new)
    issues = []
    root_before, root_after = full_name(old), full_name(new)
    for full in before:
        if full in after:
            continue
        short = full.rsplit(".", 1)[-1]
        for now, schema in after.items():
            same_type = now.rsplit(".", 1)[-1] == short or (full == root_before and now == root_after)
            if same_type and full not in aliases(now, schema):
                issues.append(
                    f"{short}: its full name changed from {full} to {now}; keep it, or give the "
                    f"new one the alias {full!r}"
                )
    return issues


def union_defaults(schema: Any, where: str = "") -> list[str]:
    """Fields of a union type whose default is not of the union's first branch (the Avro
    spec's rule, which fastavro does not hold but Java readers such as Kafka Connect's and
    Flink's do: `["long", "null"]` with default null is refused there)."""
    issues: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            issues += union_defaults(branch, where)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            name = f"{where}{schema.get('name', '?')}"
            for f in schema.get("fields", []):
                t = f.get("type")
                if isinstance(t, list) and t and "default" in f:
                    first = t[0] if isinstance(t[0], str) else t[0].get("type")
                    if (f["default"] is None) != (first == "null"):
                        issues.append(
                            f"{name}.{f['name']}: default {f['default']!r} is not of the union's first "
                            f"branch ({first}); put that branch first"
                        )
                issues += union_defaults(t, f"{name}.")
        else:
            for key in ("items", "values"):
                if key in schema:
                    issues += union_defaults(schema[key], where)
    return issues
