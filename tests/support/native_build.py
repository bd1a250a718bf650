"""`.ci/native.py` (the build of the native parts) as a module, for the tests that check builds."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("native_build", ROOT / ".ci" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: set by CI (.ci/run): a compiled part that is not built is a failure, never a skip
REQUIRED = os.environ.get("CONVMETRICS_REQUIRE_NATIVE") == "1"


def skip_unless_built(what: str, built: bool) -> None:
    """A test of a compiled part that is not built skips with a visible reason, instead of
    passing without checking anything; where native parts are required (CI) it fails."""
    if built:
        return
    if REQUIRED:
        pytest.fail(f"{what} is not built, but CONVMETRICS_REQUIRE_NATIVE=1: run `make setup`")
    pytest.skip(f"{what} is not built (no Rust toolchain or C compiler here): nothing to check")


def needs(what: str, built: bool) -> pytest.MarkDecorator:
    """Mark: skip, with a visible reason, where `what` is not built, except where native parts
    are required (CI): there the test runs and fails."""
    return pytest.mark.skipif(not built and not REQUIRED, reason=f"{what} not built (no Rust toolchain)")
