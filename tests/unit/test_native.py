"""A compiled module (.ci/native.py, mypyc) is imported instead of its source: it must be
built from that very source, or the tests and benchmarks would run stale code."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

from support import native_build

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("producer", "consumer", "schemas", "convmetrics")


def extension_modules() -> list[Path]:
    """Sources that have a compiled extension beside them."""
    found = []
    for package in PACKAGES:
        for so in sorted((ROOT / package).glob("*.cpython-*.so")):
            source = so.with_name(so.name.split(".", 1)[0] + ".py")
            if source.exists():
                found.append(source)
    return found


def test_every_compiled_module_matches_its_source() -> None:
    native_build.skip_unless_built("a compiled module (mypyc)", bool(extension_modules()))
    for source in extension_modules():
        stamp = source.with_suffix(".native-sha256")
        assert stamp.exists(), f"{source.name}: an extension without a build record; run `make setup`"
        built_from = stamp.read_text().strip()
        now = hashlib.sha256(source.read_bytes()).hexdigest()
        assert built_from == now, f"{source} changed since it was compiled: run `make setup`"


def test_the_compiled_encoder_is_the_one_imported_when_built() -> None:
    built = bool(list((ROOT / "producer").glob("encoder.cpython-*.so")))
    native_build.skip_unless_built("the compiled encoder (mypyc)", built)  # interpreted: nothing to check
    module = importlib.import_module("producer.encoder")
    assert str(module.__file__).endswith(".so")


def test_every_built_crate_matches_its_sources() -> None:
    build = native_build.load()
    crates = {
        crate: sorted((ROOT / module).parent.glob((ROOT / module).name + ".cpython-*.so"))
        for crate, module in build.CRATES.items()
    }
    native_build.skip_unless_built("a compiled crate (Rust)", any(crates.values()))
    for crate, module in build.CRATES.items():
        built = crates[crate]
        if not built:
            continue  # not built (no cargo): tests/unit/consumer/test_fold_native.py says where it must be
        stamp = (ROOT / module).with_suffix(".native-sha256")
        assert stamp.exists(), f"{built[0].name}: an extension without a build record; run `make setup`"
        assert stamp.read_text().strip() == build.crate_digest(ROOT / crate), (
            f"{crate} changed since it was built: run `make setup`"
        )


def test_required_native_parts_are_an_error_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONVMETRICS_REQUIRE_NATIVE=1 (CI sets it): a missing compiled part refuses to run
    instead of falling back in silence."""
    from consumer.exceptions import ConfigError
    from consumer.fold import native
    from producer import intake
    from producer.exceptions import SettingsError
    from schemas import conversation_codec

    mp = monkeypatch
    mp.setenv("CONVMETRICS_REQUIRE_NATIVE", "1")
    mp.delenv("CONVMETRICS_FOLD", raising=False)
    mp.setattr(native, "NATIVE", None)
    with pytest.raises(ConfigError, match="CONVMETRICS_REQUIRE_NATIVE=1 but the compiled fold"):
        native.choose()
    assert native.choose("python").name == "python"  # asked for by name: still fine
    mp.setattr(intake, "encoder_compiled", lambda: False)
    with pytest.raises(SettingsError, match="runs interpreted"):
        intake.Intake(conversation_codec())
    mp.setenv("CONVMETRICS_REQUIRE_NATIVE", "0")
    assert native.choose().name == "python"
    intake.Intake(conversation_codec())
