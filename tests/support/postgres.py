"""A real PostgreSQL for tests: the one configured, else a container, else a local server.

Order: ``$CONVMETRICS_POSTGRES_URL`` (an existing server; each test gets its own database
on it), then testcontainers' PostgresContainer when a Docker engine answers (the project's
image, deploy/postgres, or the official one; ``CONVMETRICS_REQUIRE_DOCKER=1`` makes a missing
engine an error instead of falling through), then a
throwaway server from Debian's ``postgresql`` package (``.ci/system-deps.sh`` installs it):
``initdb`` into a temp dir, started by ``pg_ctl`` as a non-root user on a free port with its
unix socket in that dir, stopped and removed at the end. When none can be had the
session fixture errors, so PostgreSQL tests fail rather than skip.

`FaultProxy` sits between the consumers and the server so a test can make the database
unreachable (refuse and cut connections) and bring it back, whichever server it is.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from convmetrics.localkafka.broker import pick_free_port as free_port

ENV_URL = "CONVMETRICS_POSTGRES_URL"
#: the non-root account a local server runs as when the tests run as root
SERVER_USER = "nobody"


def with_database(url: str, database: str) -> str:
    """The same postgresql:// URL naming another database (query string kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def with_address(url: str, host: str, port: int) -> str:
    """The same postgresql:// URL pointing at another host and port (credentials kept)."""
    parts = urlsplit(url)
    cred = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{cred}@{host}:{port}" if cred else f"{host}:{port}"))


@dataclass
class PostgresServer:
    """A reachable server: `url` names its maintenance database (superuser)."""

    url: str
    kind: str  # "external", "docker" or "local"
    local: LocalPostgres | None = None
    _created: list[str] = field(default_factory=list)

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its postgresql:// URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database(self.url, name)

    def drop_databases(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in self._created:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()


class LocalPostgres:
    """A throwaway server from the system's PostgreSQL binaries (never as root)."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="convmetrics-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            info = pwd.getpwnam(self.user)
            os.chown(self.root, info.pw_uid, info.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if out.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}\n{log}")

    def init(self) -> LocalPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> LocalPostgres:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast`: roll back open transactions and shut down; `immediate`: like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def find_bindir() -> Path:
    """Newest /usr/lib/postgresql/*/bin with initdb, else the directory of `initdb` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError(
        "no PostgreSQL server binaries (initdb): run `bash .ci/system-deps.sh` (installs Debian's "
        f"postgresql), or set {ENV_URL}, or start a Docker engine"
    )


#: the PostgreSQL image a container runs: $CONVMETRICS_POSTGRES_IMAGE, else the project's own
#: (deploy/postgres, `make images`) when the engine has it, else the official one
IMAGE_ENV = "CONVMETRICS_POSTGRES_IMAGE"
PROJECT_IMAGE = "convmetrics/postgres:15"
OFFICIAL_IMAGE = "postgres:16-alpine"


def _use_docker() -> bool:
    """An engine answers (or raise, where one is required: CONVMETRICS_REQUIRE_DOCKER=1)."""
    from convmetrics.localkafka.provider import use_docker

    return use_docker()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """The session's server; see the module docstring for the order tried."""
    url = os.environ.get(ENV_URL)
    if url:
        server = PostgresServer(url, "external")
        try:
            yield server
        finally:
            server.drop_databases()
        return
    if _use_docker():
        from testcontainers.community.postgres import PostgresContainer

        from convmetrics.localkafka.container import choose_image

        image = choose_image(PROJECT_IMAGE, OFFICIAL_IMAGE, IMAGE_ENV)
        # both images take `postgres -c ...` as their command; the fault tests open many connections
        with PostgresContainer(image, driver=None).with_command("postgres -c max_connections=200") as pg:
            server = PostgresServer(pg.get_connection_url(), "docker")
            print(f"PostgreSQL in a container ({image}) at {server.url}", file=sys.stderr)
            yield server
        return
    local = LocalPostgres()
    started = time.monotonic()
    try:
        local.init().start()
        print(f"local PostgreSQL on port {local.port} in {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield PostgresServer(local.url, "local", local)
    finally:
        local.remove()


class FaultProxy:
    """A TCP relay to the server that a test can cut (refuse and drop every connection)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self.open()

    def url(self, server_url: str) -> str:
        """`server_url` routed through this proxy."""
        return with_address(server_url, "127.0.0.1", self.port)

    @classmethod
    def to(cls, server_url: str) -> FaultProxy:
        parts = urlsplit(server_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def open(self) -> None:
        """Accept and relay connections again."""
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections (nothing listens) and reset every open one."""
        with self._lock:
            lst, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if lst is not None:
            with contextlib.suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)
            lst.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def stall(self) -> None:
        """Keep connections open but hold every byte sent until `resume` (a hung network)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self.resume()
        self.cut()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not lst:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b, self._flowing), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket, flowing: threading.Event) -> None:
    try:
        while data := src.recv(65536):
            flowing.wait()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
