"""The compose stack (deploy/compose.yaml) as a test drives it: up on free host ports under a
project name of its own, the services' containers and health, down with its volumes.

The compose tool is Debian's ``docker-compose`` (1.29) where installed, else ``docker
compose`` (v2); both read the same file and the same variables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

from support.gateway import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
SERVICES = ("kafka", "postgres", "gateway", "consumer-1", "consumer-2", "serve")
PASSWORD = "stack-test"


def docker(*args: str, timeout: float = 60) -> str:
    """Run the docker client; its stdout, or an assertion naming the command and its stderr."""
    cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
    return done.stdout


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


class ComposeStack:
    """One running copy of deploy/compose.yaml, on free loopback ports."""

    def __init__(self, log_dir: Path) -> None:
        self.project = f"cmtest{uuid.uuid4().hex[:8]}"
        names = ("GATEWAY_PORT", "API_PORT", "KAFKA_PORT", "POSTGRES_PORT")
        self.ports = {name: free_port() for name in names}
        self.env = {
            **os.environ,
            **{k: str(v) for k, v in self.ports.items()},
            "POSTGRES_PASSWORD": PASSWORD,
            # every metric and grouping: the oracle compares all of them
            "CONVMETRICS_METRIC_SET": "full",
        }
        self.log = log_dir / "compose.log"
        self.gateway = f"http://127.0.0.1:{self.ports['GATEWAY_PORT']}"
        self.api = f"http://127.0.0.1:{self.ports['API_PORT']}"
        self.bootstrap = f"127.0.0.1:{self.ports['KAFKA_PORT']}"
        self.store = (
            f"postgresql://convmetrics:{PASSWORD}@127.0.0.1:{self.ports['POSTGRES_PORT']}/convmetrics"
        )

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        cmd = [*compose_command(), "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env, check=False)
        if check:
            assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        return done.stdout

    def up(self, timeout: float = 240) -> None:
        """Start every service; return when each container's health check passes."""
        self.compose("up", "-d", timeout=timeout)
        self.wait_healthy(SERVICES, timeout)

    def container(self, service: str) -> str:
        """The id of a service's container."""
        found = self.compose("ps", "-q", service).split()
        assert len(found) == 1, f"{service}: containers {found}"
        return found[0]

    def health(self, service: str) -> str:
        """`healthy`, `unhealthy`, `starting`, or the container's state when it is not running."""
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        state = docker("inspect", "-f", fmt, self.container(service)).split()
        return state[1] if state[0] == "running" and len(state) > 1 else state[0]

    def wait_healthy(self, services: Sequence[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {s: self.health(s) for s in services}
            if all(v == "healthy" for v in states.values()):
                return
            assert time.monotonic() < deadline, f"unhealthy after {timeout}s: {states}\n{self.logs()[-5000:]}"
            time.sleep(0.5)

    def logs(self, service: str | None = None) -> str:
        return self.compose("logs", "--no-color", *([service] if service else []), check=False)

    def ready(self, url: str) -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def down(self) -> None:
        """Keep the logs, then remove the containers, network and volumes."""
        self.log.write_text(self.logs())
        self.compose("down", "-v", "-t", "10", check=False)
