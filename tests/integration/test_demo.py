"""`convmetrics demo` (the README's main command): the pipeline end to end, live until Ctrl-C
(or once, `--once`), then nothing left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.gateway import free_ports


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
    """Also in a shell whose CONVMETRICS_BOOTSTRAP_SERVERS points at the real services' Kafka
    (here a port nothing listens on): the demo never writes its generated events there; it
    runs on its own broker and says it did not use the variable."""
    gw, api, production = free_ports(3)
    out = subprocess.run(
        [sys.executable, "-m", "convmetrics", "demo", "--once", "--events", "3000",
         "--data-dir", str(tmp_path), "--gateway-port", str(gw), "--api-port", str(api)],
        capture_output=True, text=True, timeout=300,
        env={**demo_env(), "CONVMETRICS_BOOTSTRAP_SERVERS": f"127.0.0.1:{production}"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CONVMETRICS_BOOTSTRAP_SERVERS is not used" in " ".join(out.stderr.split())  # lines wrap
    assert "Closure metrics by channel type" in out.stdout
    assert "CLOUD_WABA" in out.stdout
    assert "accepted" in out.stderr and "rejected 0" in out.stderr
    assert not listening(gw) and not listening(api)
    assert processes_mentioning(str(tmp_path)) == []  # broker, consumer: gone


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    gw, api = free_ports(2)
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


def test_the_demo_runs_live_on_events_timed_around_now_until_ctrl_c(tmp_path: Path) -> None:
    """By default the demo keeps running: its events end at the present (the newest minute
    with data is now's, not 2023's), a live trickle keeps adding events timed as they are
    sent (the totals grow while it runs), its consumer folds every metric (the dashboard's
    grouped table has them all), and Ctrl-C stops it and everything it started."""
    gw, api = free_ports(2)
    log = tmp_path / "demo.err"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "convmetrics", "demo", "--events", "2000", "--live-rate", "40",
             "--data-dir", str(tmp_path / "demo"), "--gateway-port", str(gw), "--api-port", str(api)],
            stdout=subprocess.DEVNULL, stderr=err, text=True, env=demo_env(),
        )  # fmt: skip
    base = f"http://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 240
        while "running; Ctrl-C stops everything" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        started = time.time()
        summary = httpx.get(f"{base}/v1/summary", timeout=10).json()
        newest = summary["newest"]["1m"]
        assert started - 600 <= newest <= started + 60, (newest, started)  # the backfill ends now
        assert httpx.get(f"{base}/v1/metric-set", timeout=10).json()["name"] == "full"
        before = summary["totals"]["created"]
        while True:  # the live trickle: more events, timed as they are sent
            later = httpx.get(f"{base}/v1/summary", timeout=10).json()
            if later["totals"]["created"] > before and later["newest"]["1m"] >= started - 60:
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        assert proc.poll() is None  # still running: the URL it printed answers
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode in (0, 130), log.read_text()[-3000:]
    assert not listening(gw) and not listening(api)
    assert processes_mentioning(str(tmp_path)) == []
