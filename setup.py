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
#: `make setup` (.ci/native.py) sets it: an editable install then compiles both in place,
#: with the venv's packages (a plain editable install, the first one, has none yet)
INPLACE = os.environ.get("CONVMETRICS_BUILD_INPLACE") == "1"
#: only a command that builds the package compiles (pip first runs `egg_info` and the like
#: to ask for requirements)
BUILDS = (
    INPLACE
    if "editable_wheel" in sys.argv
    else bool({"bdist_wheel", "build", "build_ext", "install"} & set(sys.argv))
)


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
            debug=False,  # release (LTO) in editable installs too: the benchmarks measure it
            optional=not REQUIRE,  # without cargo: a warning, and the reference fold runs
        )
    ]


def _mypyc() -> list[object]:
    try:
        from mypyc.build import mypycify

        # a wheel's isolated build environment lacks the runtime packages (pydantic, ...):
        # type-check leniently there (no project config; missing imports as Any); in place
        # (`make setup`) with the project's config and the venv's packages
        lenient = [] if INPLACE else ["--config-file=", "--ignore-missing-imports"]
        extensions = list(mypycify([*lenient, "producer/encoder.py"]))
        for ext in extensions:  # no C compiler: a warning, and the interpreted module runs
            ext.optional = not REQUIRE
        return extensions
    except Exception as exc:
        if REQUIRE:
            raise
        _warn("the mypyc encoder", exc)
        return []


setup(rust_extensions=_rust() if BUILDS else [], ext_modules=_mypyc() if BUILDS else [])
