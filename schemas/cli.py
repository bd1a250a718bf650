"""`convmetrics schemas ...`: list, check and pin the Avro contract."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "schemas",
        help="list, check and pin the versioned Avro schemas",
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
            help="schema folder to check (default: the schemas shipped with this install)",
        )
        a.set_defaults(func=func)


def _folder(args: argparse.Namespace) -> Path:
    from schemas.registry import SCHEMA_DIR

    folder: Path = args.dir or SCHEMA_DIR
    if not folder.is_dir():
        print(f"error: schema folder {folder} does not exist", file=sys.stderr)
        raise SystemExit(2)
    return folder


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
