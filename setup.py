"""The compiled parts, built by the build backend into every wheel (`pip install .`,
`pip wheel .`, `python -m build`): the consumer's fold (the Rust crate in consumer/native,
PyO3, by setuptools-rust) and the gateway's Avro writer (producer/encoder.py, by mypyc).

Both have a Python twin with the same API, so a build without cargo or a C compiler warns
and falls back to it; `CONVMETRICS_REQUIRE_NATIVE=1` (CI sets it) makes a missing part an
error instead. Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

REQUIRE = os.environ.get("CONVMETRICS_REQUIRE_NATIVE") == "1"
#: only a command that builds the package compiles (pip first runs `egg_info` and the like
#: to ask for requirements); an editable install (`make setup`) builds both in place
#: instead (.ci/native.py, with its staleness stamps)
BUILDS = {"bdist_wheel", "build", "build_ext", "install"} & set(sys.argv) and "editable_wheel" not in sys.argv


def _warn(what: str, why: object) -> None:
    print(f"convmetrics: {what} not compiled ({why}); its Python twin runs, slower", file=sys.stderr)


def _rust() -> list[object]:
    try:
        from setuptools_rust import Binding, RustExtension
    except ImportError as exc:
        if REQUIRE:
            raise
        _warn("the Rust fold", exc)
        return []
    return [
        RustExtension(
            "consumer.fold._fold_native",
            path="consumer/native/Cargo.toml",
            binding=Binding.PyO3,
            args=["--locked"],
            optional=not REQUIRE,  # without cargo: a warning, and the reference fold runs
        )
    ]


def _mypyc() -> list[object]:
    try:
        from mypyc.build import mypycify

        # the build's own isolated environment lacks the runtime packages (pydantic, ...):
        # type-check leniently there (no project config; missing imports as Any), which
        # compiles the same code; `make typecheck` holds the source to mypy --strict
        return list(mypycify(["--config-file=", "--ignore-missing-imports", "producer/encoder.py"]))
    except Exception as exc:
        if REQUIRE:
            raise
        _warn("the mypyc encoder", exc)
        return []


setup(rust_extensions=_rust() if BUILDS else [], ext_modules=_mypyc() if BUILDS else [])
