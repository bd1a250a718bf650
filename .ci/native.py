"""Build the native parts in place, through the build backend (setup.py), as a wheel is
built: the gateway's Avro body writer (producer/encoder.py, compiled with mypyc) and the
consumer's fold (consumer/native, a Rust crate, PyO3, by setuptools-rust).

Called by `make setup` after the Python packages are installed: it runs
`pip install --no-build-isolation --no-deps -e .` with `CONVMETRICS_BUILD_INPLACE=1`, so
setup.py compiles both next to their sources with this venv's packages (mypyc then sees
the real types of pydantic and the rest, as `make typecheck` does), then writes beside
each extension a `<module>.native-sha256` stamp of the source it was built from:
tests/unit/test_native.py fails when a source changed since (rerun `make setup`), so a
stale build is never tested or benchmarked by mistake.

Without cargo or a C compiler the part is skipped with a warning and its Python twin runs
(slower); with `CONVMETRICS_REQUIRE_NATIVE=1` (CI) that is an error. The encoder stays
plain, typed Python (the source of truth, `mypy --strict` clean): the batch endpoint ran
~25% more events/s compiled (bench/gateway.py). The fold implements
`consumer/fold/reference.py`'s contract in Rust (crates pinned by its Cargo.lock).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
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


def extension(module: str) -> Path:
    return ROOT / (module + str(sysconfig.get_config_var("EXT_SUFFIX")))


def stamps() -> dict[Path, str]:
    """Each native part's stamp file and the digest of what it is built from."""
    out = {(ROOT / m).with_suffix(".native-sha256"): digest(ROOT / m) for m in MODULES}
    for crate, module in CRATES.items():
        out[(ROOT / module).with_suffix(".native-sha256")] = crate_digest(ROOT / crate)
    return out


def main() -> int:
    for source in [ROOT / m for m in MODULES]:  # a stale build must not be imported instead
        for old in built(source):
            old.unlink(missing_ok=True)
    for module in CRATES.values():
        extension(module).unlink(missing_ok=True)
    for stamp in stamps():
        stamp.unlink(missing_ok=True)
    cargo = find_cargo()
    env = {**os.environ, "CONVMETRICS_BUILD_INPLACE": "1", "PYO3_PYTHON": sys.executable}
    env["CARGO_TARGET_DIR"] = str(CARGO_TARGET)
    if cargo is not None:
        env["PATH"] = f"{Path(cargo).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-build-isolation",
        "--no-deps",
        "-e",
        str(ROOT),
    ]
    print("native: building the compiled parts through setup.py (first build fetches the crates)", flush=True)
    if subprocess.run(cmd, env=env, cwd=ROOT).returncode != 0:
        print("native: the build failed", file=sys.stderr)
        return 1
    ok = True
    for source in [ROOT / m for m in MODULES]:
        if built(source):
            (source.with_suffix(".native-sha256")).write_text(digest(source) + "\n")
            print(f"native: compiled {source.relative_to(ROOT)}")
        else:
            print(f"native: {source.relative_to(ROOT)} left interpreted (no C compiler?)", file=sys.stderr)
            ok = ok and not REQUIRE
    for crate, module in CRATES.items():
        if extension(module).exists():
            (ROOT / module).with_suffix(".native-sha256").write_text(crate_digest(ROOT / crate) + "\n")
            print(f"native: built {extension(module).relative_to(ROOT)}")
        else:
            print(f"native: {crate} not built (no cargo?): the reference Python fold runs", file=sys.stderr)
            ok = ok and not REQUIRE
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
