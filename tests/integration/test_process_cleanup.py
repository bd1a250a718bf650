"""Processes end together: `convmetrics broker` and `convmetrics demo --keep-running` stopped
by SIGTERM, SIGHUP or killed by SIGKILL leave no process and no open port behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def children_of(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def wait_until(condition: object, timeout: float, what: object) -> None:
    """Wait for `condition()`; `what` (a text, or a callable giving one) explains a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"after {timeout:g} s: {what() if callable(what) else what}")


def survivors(pids: list[int]) -> str:
    return "; ".join(f"{p}: {cmdline(p)}" for p in pids if alive(p))


def start(args: list[str], log: Path, ready: str, timeout: float = 180) -> subprocess.Popen[bytes]:
    """`convmetrics ARGS` with its output in `log`, once `ready` was printed."""
    out = open(log, "wb")  # noqa: SIM115 - the child holds it; closed with the test's tmp dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "convmetrics", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    try:
        wait_until(
            lambda: ready in log.read_text(errors="replace") or proc.poll() is not None, timeout, ready
        )
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, log.read_text(errors="replace")
    return proc


def reap(pids: list[int]) -> None:
    """Kill whatever a failed test left running (so a failure does not leak processes)."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def ports_in(text: str) -> set[int]:
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_the_broker_command_takes_its_jvm_along(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "broker.out"
    proc = start(["broker"], log, "bootstrap servers:")
    (port,) = ports_in(log.read_text())
    jvms = children_of(proc.pid)
    try:
        assert jvms and listening(port)
        proc.send_signal(sig)
        proc.wait(60)
        wait_until(lambda: not any(alive(p) for p in jvms), 60, f"the JVM outlived a {sig.name}ed broker")
        wait_until(lambda: not listening(port), 30, f"port {port} still open")
    finally:
        reap([proc.pid, *jvms])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_demo_takes_broker_gateway_and_consumer_along(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "demo.out"
    proc = start(
        ["demo", "--keep-running", "--events", "300", "--data-dir", str(tmp_path / "demo")],
        log,
        "running; Ctrl-C stops everything",
    )
    text = log.read_text()
    ports = ports_in(text)
    kids = children_of(proc.pid)
    try:
        assert len(kids) >= 3 and len(ports) >= 3, text  # broker JVM, gateway, consumer; their ports
        assert all(listening(p) for p in ports)
        proc.send_signal(sig)
        proc.wait(90)
        wait_until(
            lambda: not any(alive(p) for p in kids),
            60,
            lambda: f"children outlived a {sig.name}ed demo: {survivors(kids)}\n{log.read_text()[-3000:]}",
        )
        wait_until(lambda: not any(listening(p) for p in ports), 30, f"ports {ports} still open")
    finally:
        reap([proc.pid, *kids])


def test_the_test_helpers_children_end_with_a_killed_test_run(tmp_path: Path) -> None:
    """A test run killed with SIGKILL leaves no consumer or gateway of its helpers behind
    (`support.pipeline.ConsumerProcess`, `support.gateway.GatewayProcess` start them under
    the parent-death signal)."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path[:0] = [{str(Path(__file__).resolve().parents[1])!r}]\n"
        "from support.pipeline import ConsumerProcess\n"
        f"p = ConsumerProcess('127.0.0.1:1', 'events', {'sqlite:///' + str(tmp_path / 'm.db')!r}, "
        f"{str(tmp_path / 'c.log')!r})\n"
        "print(p.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    runner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    child = int(runner.stdout.readline())
    try:
        log = tmp_path / "c.log"  # running: it says what it consumes (no broker there: it waits)
        wait_until(lambda: log.exists() and "consuming events" in log.read_text(), 60, "the consumer started")
        assert alive(child)
        runner.kill()
        runner.wait(30)
        wait_until(lambda: not alive(child), 60, "the helper's consumer outlived its killed test run")
    finally:
        reap([runner.pid, child])
