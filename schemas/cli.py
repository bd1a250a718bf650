"""`convmetrics schemas ...`: list, check, pin and push the Avro contract."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from schemas import argtypes


def register(sub: Any) -> None:
    p = sub.add_parser(
        "schemas",
        help="list, check, pin and push the versioned Avro schemas",
        description="The Avro contract lives in schemas/<subject>/v<N>.avsc; a published "
        "version never changes (its fingerprint is pinned in schemas/fingerprints.json).",
    )
    actions = p.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("check", _check, "verify pins and FULL_TRANSITIVE compatibility; non-zero exit on failure"),
        ("list", _list, "print every subject, version and fingerprint"),
        ("pin", _pin, "pin the fingerprint of new versions (existing pins are never changed)"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument(
            "--dir",
            type=Path,
            default=None,
            help="schema folder to read (default: the schemas shipped with this install)",
        )
        a.set_defaults(func=func)
    from schemas.schema_registry import DEFAULT_TOPICS, PUSH_TOPIC_FLAGS, add_arguments

    push = actions.add_parser(
        "push",
        help="register every version of every subject in the schema registry, verified",
        description="For the Confluent wire format: registers each subject's versions, oldest first, "
        "under its topic's registry subject (<topic>-value), sets that subject's compatibility to "
        "FULL_TRANSITIVE and verifies that the registry then holds exactly the pinned versions. "
        "Idempotent: a second push registers nothing. A registry holding another schema under one "
        "of these subjects is an error naming it (exit 1); nothing is deleted.",
    )
    add_arguments(push)
    for subj, topic in DEFAULT_TOPICS.items():
        # the events topic's name as the gateway, produce and consume read it
        env = "CONVMETRICS_TOPIC" if subj == "conversation_event" else None
        push.add_argument(
            PUSH_TOPIC_FLAGS[subj],
            dest=f"topic_{subj}",
            default=(os.environ.get(env) if env else None) or topic,
            metavar="TOPIC",
            help=f"topic written with {subj} ("
            + (f"env {env}; " if env else "")
            + f"default {topic}; registry subject <topic>-value)",
        )
    push.set_defaults(func=_push, dir=None)


def _folder(args: argparse.Namespace) -> Path:
    from schemas.registry import SCHEMA_DIR, subject_names

    folder: Path = args.dir or SCHEMA_DIR
    if not folder.is_dir():
        why = "does not exist"
    elif not subject_names(folder):
        why = "holds no schemas (a folder per subject, with v1.avsc, v2.avsc, ...)"
    else:
        return folder
    print(f"{argtypes.command_name(args)}: error: schema folder {folder} {why}", file=sys.stderr)
    raise SystemExit(2)


def _check(args: argparse.Namespace) -> int:
    from schemas.contract import check_folder

    subjects, problems = check_folder(_folder(args))
    for s in subjects:
        versions = ", ".join(f"v{v.version}" for v in s.versions)
        print(f"{s.name}: {versions}")
    if problems:
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        print(f"schemas check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("schemas check: OK (pins match; every version pair compatible both ways)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from schemas.registry import load_subject, subject_names

    folder = _folder(args)
    for name in subject_names(folder):
        for v in load_subject(name, folder).versions:
            print(f"{name}\tv{v.version}\t{v.fingerprint_hex}\t{v.path}")
    return 0


def _pin(args: argparse.Namespace) -> int:
    from schemas.contract import pin_new_versions

    added = pin_new_versions(_folder(args))
    print("pinned: " + (", ".join(added) if added else "nothing new"))
    return 0


def _push(args: argparse.Namespace) -> int:
    from schemas.contract import check_folder
    from schemas.exceptions import RegistrySettingsError
    from schemas.registry import SCHEMA_DIR, load_pins
    from schemas.schema_registry import ENV_URL, RegistryClient, registry_settings
    from schemas.urls import redacted

    subjects, problems = check_folder(SCHEMA_DIR)
    if problems:  # the repo first: never push a contract that does not check
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        return 1
    # no registry, or one that refuses or cannot be reached, raises: `convmetrics` prints its line
    settings = registry_settings(args.schema_registry_url)
    if settings is None:
        raise RegistrySettingsError(f"no schema registry: pass --schema-registry-url or set {ENV_URL}")
    client = RegistryClient(settings)
    pins = load_pins(SCHEMA_DIR)
    for s in subjects:
        pushed = client.push(s, getattr(args, f"topic_{s.name}"), pins)
        ids = ", ".join(f"v{v} id {i}" for v, i in pushed.ids)
        print(f"{pushed.registry_subject}: {s.name} {ids} ({pushed.registered} new; FULL_TRANSITIVE)")
    print(f"schemas push: OK ({redacted(settings.url)} holds exactly the pinned versions)")
    return 0
