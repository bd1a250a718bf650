"""Compile the gateway's Avro body writer (producer/encoder.py) with mypyc, in place.

Called by `make setup` after the Python packages are installed. The module stays plain,
typed Python (the source of truth, `mypy --strict` clean); mypyc turns the same source
into a C extension next to it, which Python imports first: the batch endpoint ran ~25%
more events/s with it on the project's 2-core machine (bench/gateway.py).

Beside each extension a `<module>.native-sha256` file records the source it was built
from; tests/unit/test_native.py fails when the source has changed since (rerun
`make setup`), so a stale build is never tested or benchmarked by mistake. Without a C
compiler (or mypyc) this warns and leaves the module interpreted: same behaviour, slower.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["producer/encoder.py"]


def digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def built(source: Path) -> list[Path]:
    """The extension files of a module (the module and its mypyc runtime library)."""
    stem = source.with_suffix("")
    return sorted(source.parent.glob(f"{stem.name}.cpython-*.so")) + sorted(
        source.parent.glob(f"{stem.name}__mypyc.cpython-*.so")
    )


def build(module: str) -> bool:
    source = ROOT / module
    stamp = source.with_suffix(".native-sha256")
    for old in [*built(source), stamp]:
        old.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="convmetrics-mypyc-") as tmp:
        # generated C and objects in a temp dir; the extension lands next to its source
        script = (
            "from setuptools import setup; from mypyc.build import mypycify; "
            f"setup(name='convmetrics-native', ext_modules=mypycify([{module!r}], target_dir={tmp!r}), "
            f"script_args=['build_ext', '--inplace', '--build-temp', {tmp!r}, '--build-lib', {tmp!r}])"
        )
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 or not built(source):
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        print(f"native: {module} left interpreted (mypyc failed):\n  " + "\n  ".join(tail), file=sys.stderr)
        for old in built(source):
            old.unlink(missing_ok=True)
        return False
    stamp.write_text(digest(source) + "\n")
    print(f"native: compiled {module} ({', '.join(p.name for p in built(source))})")
    return True


def main() -> int:
    for module in MODULES:
        build(module)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
