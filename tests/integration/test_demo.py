"""`convmetrics demo` (the README's main command): the pipeline end to end, then nothing left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(pid))
    return found


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVMETRICS_BOOTSTRAP_SERVERS"}
    return {**env, "COLUMNS": "120"}  # the demo starts its own local broker, as on a fresh machine


def test_demo_streams_counts_and_cleans_up(tmp_path: Path) -> None:
    gw, api = free_port(), free_port()
    out = subprocess.run(
        [sys.executable, "-m", "convmetrics", "demo", "--events", "3000", "--data-dir", str(tmp_path),
         "--gateway-port", str(gw), "--api-port", str(api)],
        capture_output=True, text=True, timeout=300, env=demo_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Closure metrics by channel type" in out.stdout
    assert "CLOUD_WABA" in out.stdout
    assert "accepted" in out.stderr and "rejected 0" in out.stderr
    assert not listening(gw) and not listening(api)
    assert processes_mentioning(str(tmp_path)) == []  # broker, consumer: gone


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    gw, api = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "convmetrics", "demo", "--events", "500", "--keep-running",
         "--data-dir", str(tmp_path), "--gateway-port", str(gw), "--api-port", str(api)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=demo_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (listening(api) and listening(gw)):
            time.sleep(0.2)
        assert listening(api) and listening(gw)
        time.sleep(5)  # mid-stream or while it keeps running: both must stop cleanly
        proc.send_signal(signal.SIGINT)
        # each child has 20 s to stop before it is killed, the broker 30 s: a loaded machine
        # may need them; a demo that hangs does not end at all
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err[-3000:]
    assert not listening(gw) and not listening(api)
    assert processes_mentioning(str(tmp_path)) == []
