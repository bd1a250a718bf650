"""Every name the benchmarks import from the project exists. The benches import much of it
inside functions (after putting the checkout on sys.path), where neither mypy nor ruff
looks: `bench/latency.py` imported a `free_port` the demo no longer had and failed only
when run."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
OURS = ("consumer", "producer", "schemas", "convmetrics")
BENCHES = sorted(p for p in (ROOT / "bench").rglob("*.py") if "results" not in p.parts)


def project_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each `from <ours> import name`, wherever it is in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in OURS:
            found += [(node.lineno, str(node.module), alias.name) for alias in node.names]
    return found


def test_the_benchmarks_are_found() -> None:
    assert {p.name for p in BENCHES} >= {"consumer.py", "latency.py", "gateway.py", "query.py"}


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_project_name_a_benchmark_imports_exists(path: Path) -> None:
    missing = []
    for line, module, name in project_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # a submodule imported by name (`from consumer.store import sqlite`)
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{path.name}:{line}: {module}.{name}")
    assert not missing, missing
