"""`convmetrics registry`: a local schema registry to try the Confluent wire format, in the
foreground as `convmetrics broker` is: it prints its URL, `schemas push` registers there,
and Ctrl-C stops it and its JVM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_registry_prints_its_url_takes_a_push_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "convmetrics", "registry"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("schema registry: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        port = int(url.split(":")[2].split("/")[0])
        push = subprocess.run(
            [sys.executable, "-m", "convmetrics", "schemas", "push", "--schema-registry-url", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert push.returncode == 0, push.stderr
        subjects = httpx.get(f"{url}/subjects", timeout=10).json()
        assert "conversation-events-value" in subjects, subjects
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stderr is not None and "stopping the schema registry" in proc.stderr.read()
        assert not listening(port)  # its JVM went with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
