"""A consumer told to stop exits within its deadline even when something it waits for
never answers (consumer.cli.STOP_DEADLINE_S): a process that hangs past it is ended with
status 1 and a line saying why."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_a_stop_that_hangs_ends_at_the_deadline() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; from consumer.cli.commands import _exit_after; _exit_after(0.5); time.sleep(60)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "did not stop within 0.5 s" in done.stderr
    assert time.monotonic() - started < 30


def test_a_process_that_ends_in_time_is_not_touched() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from consumer.cli.commands import _exit_after; _exit_after(5); print('done')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
