"""bench/mutants.py plants each mutant by replacing a text in a file: one that no longer
occurs exactly once there (the code moved on) is found here, not minutes into a run."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _mutants() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mutants", ROOT / "bench" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


MUTANTS = _mutants()


@pytest.mark.parametrize("mutant", [*MUTANTS.PYTHON, *MUTANTS.RUST], ids=lambda m: m.name)
def test_every_mutant_changes_one_place_and_names_tests_that_exist(mutant: Any) -> None:
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: its text is not found once in {mutant.path}"
    assert mutant.old != mutant.new
    if mutant.path.endswith(".py"):  # a mutant that does not parse proves nothing
        ast.parse(text.replace(mutant.old, mutant.new), mutant.path)
    for test in mutant.tests:
        file = test.partition("::")[0]
        assert (ROOT / file).is_file(), f"{mutant.name}: no test file {file}"


def test_the_tests_mutants_name_by_id_are_collected() -> None:
    """A test named by id (`file::test`) exists: pytest collects it (the PostgreSQL store's
    suite takes its functions from the SQLite one's, so its file does not spell them)."""
    named = sorted({t for m in (*MUTANTS.PYTHON, *MUTANTS.RUST) for t in m.tests if "::" in t})
    assert named  # the check below checks something
    found = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *named],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in (*MUTANTS.PYTHON, *MUTANTS.RUST)]
    assert len(names) == len(set(names))
