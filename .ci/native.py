"""Build the native parts in place: the gateway's Avro body writer (producer/encoder.py,
compiled with mypyc) and the consumer's fold (consumer/native, a Rust crate, PyO3).

Called by `make setup` after the Python packages are installed.

The fold: `consumer/native` implements `consumer/fold/reference.py`'s contract in Rust; cargo builds
it (crates from crates.io, pinned by its Cargo.lock) into
`consumer/fold/_fold_native.<python tag>.so`, which `consumer.fold.native` picks over the
reference fold. Where cargo exists a failed build fails the setup (a silent fallback would
run and benchmark the slower fold); without cargo it warns and the reference fold runs.

The encoder: the module stays plain,
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
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["producer/encoder.py"]
#: Rust crate -> the extension module it builds (cdylib `lib<name>.so`, name = module's last part)
CRATES = {"consumer/native": "consumer/fold/_fold_native"}
#: per checkout: a target dir shared by two checkouts would hand one the other's library
#: (cargo keeps one unhashed cdylib path per target dir)
CARGO_TARGET = ROOT / "build" / "cargo-target"
#: CI sets it: a part that cannot be built is an error, not a warning
REQUIRE = os.environ.get("CONVMETRICS_REQUIRE_NATIVE") == "1"


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


def crate_digest(crate: Path) -> str:
    """sha256 over a crate's manifest, lock file and sources (paths and contents)."""
    h = hashlib.sha256()
    files = [crate / "Cargo.toml", crate / "Cargo.lock", *sorted((crate / "src").rglob("*.rs"))]
    for f in files:
        h.update(f.relative_to(crate).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def find_cargo() -> str | None:
    found = shutil.which("cargo")
    if found is None and (Path.home() / ".cargo/bin/cargo").exists():  # rustup, not on PATH
        found = str(Path.home() / ".cargo/bin/cargo")
    return found


def build_crate(crate_dir: str, module: str) -> bool:
    crate = ROOT / crate_dir
    target = ROOT / (module + str(sysconfig.get_config_var("EXT_SUFFIX")))
    stamp = (ROOT / module).with_suffix(".native-sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == crate_digest(crate):
        print(f"native: {target.name} is up to date")
        return True
    cargo = find_cargo()
    if cargo is None and REQUIRE:
        print(f"native: no cargo, and CONVMETRICS_REQUIRE_NATIVE=1: {crate_dir} is required", file=sys.stderr)
        return False
    if cargo is None:
        for old in (target, stamp):  # a stale build must not be imported instead of the reference
            old.unlink(missing_ok=True)
        print(
            f"native: no cargo, {crate_dir} not built: the reference Python fold runs (slower)",
            file=sys.stderr,
        )
        return True
    for old in (target, stamp):
        old.unlink(missing_ok=True)
    name = module.rsplit("/", 1)[-1]
    cmd = [cargo, "build", "--release", "--locked", "--manifest-path", str(crate / "Cargo.toml")]
    env = {**os.environ, "PYO3_PYTHON": sys.executable, "CARGO_TARGET_DIR": str(CARGO_TARGET)}
    print(f"native: {' '.join(cmd[1:4])} {crate_dir} (first build fetches its crates)", flush=True)
    done = subprocess.run(cmd, env=env, cwd=crate)
    built_lib = CARGO_TARGET / "release" / f"lib{name}.so"
    if done.returncode != 0 or not built_lib.exists():
        print(f"native: building {crate_dir} failed (cargo exit {done.returncode})", file=sys.stderr)
        return False
    shutil.copyfile(built_lib, target)
    stamp.write_text(crate_digest(crate) + "\n")
    print(f"native: built {target.relative_to(ROOT)}")
    return True


def main() -> int:
    compiled = [build(module) for module in MODULES]
    if REQUIRE and not all(compiled):
        print("native: CONVMETRICS_REQUIRE_NATIVE=1 and a module was left interpreted", file=sys.stderr)
        return 1
    ok = all([build_crate(crate, module) for crate, module in CRATES.items()])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
