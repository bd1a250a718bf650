"""Every name the benchmarks import from the project, from the tests' support package and
from their own helper modules (bench/common.py, bench/peers/peerlib.py, ...) exists. The
benches import much of it inside functions (after putting the checkout on sys.path), where
neither mypy nor ruff looks: `bench/latency.py` imported a `free_port` the demo no longer
had and failed only when run."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCHES = sorted(p for p in (ROOT / "bench").rglob("*.py") if "results" not in p.parts)
PACKAGES = ("consumer", "producer", "schemas", "convmetrics", "support")
#: the benches' own modules, imported by name from their folder (which each puts on sys.path;
#: not this test: bench/consumer.py would shadow the consumer package)
LOCAL = {p.stem: p for p in BENCHES if p.stem not in PACKAGES}
OURS = (*PACKAGES, *LOCAL)


def project_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each `from <ours> import name`, wherever it is in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in OURS:
            found += [(node.lineno, str(node.module), alias.name) for alias in node.names]
    return found


def load_local(stem: str) -> ModuleType:
    """A bench's helper module, loaded from its file under a name of its own (sys.path as it
    was after: a helper may put its folder first)."""
    path, kept = LOCAL[stem], list(sys.path)
    spec = importlib.util.spec_from_file_location(f"_bench_{stem}", path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = kept
    return mod


def test_the_benchmarks_are_found() -> None:
    assert {p.name for p in BENCHES} >= {"consumer.py", "latency.py", "gateway.py", "query.py"}


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_project_name_a_benchmark_imports_exists(path: Path) -> None:
    missing = []
    for line, module, name in project_imports(path):
        mod = load_local(module) if module in LOCAL else importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # a submodule imported by name (`from consumer.store import sqlite`)
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{path.name}:{line}: {module}.{name}")
    assert not missing, missing
