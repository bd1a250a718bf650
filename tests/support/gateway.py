"""A real `convmetrics gateway` process for tests (shared by gateway, pipeline and fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from convmetrics.localkafka.broker import pick_free_port as free_port
from convmetrics.localkafka.broker import pick_free_ports as free_ports  # noqa: F401
from convmetrics.process import ending_with_parent


class GatewayProcess:
    """``python -m convmetrics gateway`` in a child process, started when /readyz answers
    200 (the topic is prepared on Kafka), or, with ``ready=False``, when /healthz does."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *args: str,
        secrets: str | None = None,
        ready: bool = True,
        log_level: str = "INFO",
    ) -> None:
        self.topic = topic
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVMETRICS_")}
        env.update(CONVMETRICS_BOOTSTRAP_SERVERS=bootstrap, CONVMETRICS_TOPIC=topic)
        if secrets:
            env["CONVMETRICS_WEBHOOK_SECRETS"] = secrets
        self.log = Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1])
        cmd = [
            sys.executable,
            "-m",
            "convmetrics",
            "--log-level",
            log_level,
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(  # it ends with the test run, even a killed one
                ending_with_parent([*cmd, "--partitions", "3", *args]), env=env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            try:
                probe = "/readyz" if ready else "/healthz"
                if httpx.get(f"{self.url}{probe}", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"gateway did not answer {probe} with 200 in 60 s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
