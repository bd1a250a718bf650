"""A real single-node KRaft Kafka broker in a child JVM, for tests and demos.

Pure helpers (properties rendering, cluster id, port picking, log tail) come first;
:class:`LocalBroker` is the thin process shell around them. The data dir doubles as
``log.dirs``; it also holds ``server.properties``, ``log4j2.properties`` and
``broker.log`` (plain files, which Kafka ignores), so a kept data dir is a complete,
restartable broker.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType

from convmetrics.localkafka.exceptions import BrokerStartError
from convmetrics.localkafka.jars import find_java, kafka_libs
from convmetrics.process import ending_with_parent

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_FILE = "broker.log"
JVM_FLAGS: tuple[str, ...] = (
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
)


def new_cluster_id() -> str:
    """Return a fresh 22-character URL-safe base64 UUID, as ``kafka-storage`` expects.

    An id starting with ``-`` is redrawn: the storage tool would read it as an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


def pick_free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct TCP ports that were free a moment ago: all bound to port 0 at once,
    then released (ports picked one at a time may repeat: the kernel hands a port just
    released out again)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def pick_free_port(host: str = HOST) -> int:
    """Return a TCP port that was free a moment ago (bound to port 0, then released)."""
    return pick_free_ports(1, host)[0]


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Return ``server.properties`` for a combined broker+controller node on localhost."""
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Re-registering after a crash waits out the old session: 2 s instead of 9 s.
        "broker.session.timeout.ms": "2000",
        "broker.heartbeat.interval.ms": "500",
    }
    props.update(extra or {})
    return "".join(f"{key}={value}\n" for key, value in props.items())


def tail_lines(path: Path, n: int = 40) -> str:
    """Return the last ``n`` lines of ``path`` (a placeholder when it does not exist)."""
    try:
        data = path.read_bytes()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-n:])


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class LocalBroker:
    """One KRaft broker process; start, stop, kill and restart on the same port and data.

    Args:
        port: Client (PLAINTEXT) port; a free one is picked when omitted.
        data_dir: Data dir, kept as is; a temp dir is created (and removed by
            :meth:`close`) when omitted.
        kafka_home: An unpacked Kafka distribution to run instead of cached jars.
        extra_properties: Overrides merged into ``server.properties`` (more listeners, TLS,
            SASL: the client port stays a PLAINTEXT listener, which readiness is checked on).
        format_args: More arguments for the storage format of a new data dir (SCRAM users:
            ``--add-scram SCRAM-SHA-512=[name=u,password=p]``).
        start_timeout: Seconds :meth:`start` waits for metadata answers.
        on_download: Called with a notice before the first, slow, jar download.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        kafka_home: Path | None = None,
        extra_properties: Mapping[str, str] | None = None,
        format_args: Sequence[str] = (),
        start_timeout: float = 60.0,
        on_download: Callable[[str], None] | None = None,
    ) -> None:
        picked = pick_free_ports(2)  # the controller's port never equals the broker's
        self.port = port or picked[0]
        self.controller_port = picked[1] if picked[1] != self.port else picked[0]
        self._owns_data = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="localkafka-")) if data_dir is None else Path(data_dir)
        self.kafka_home = kafka_home
        self.extra_properties = dict(extra_properties or {})
        self.format_args = list(format_args)
        self.start_timeout = start_timeout
        self.on_download = on_download
        self.command: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr/log4j file."""
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalBroker:
        """Start the broker and wait until it answers metadata requests.

        Raises:
            BrokerStartError: The process exited early or did not answer in time.
            JavaNotFoundError: No Java runtime.
            KafkaJarsError: The jars could not be found or downloaded.
        """
        if self.running:
            return self
        java = find_java()
        classpath = f"{kafka_libs(self.kafka_home, on_download=self.on_download)}/*"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(
            render_server_properties(
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.data_dir,
                extra=self.extra_properties,
            ),
            encoding="utf-8",
        )
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(
            resources.files(__package__).joinpath("log4j2.properties").read_text("utf-8"), "utf-8"
        )
        base = [java, *JVM_FLAGS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (self.data_dir / "meta.properties").exists():
            self._format(base, props)
        self.command = [*base, "kafka.Kafka", str(props)]
        log.info("starting Kafka broker on %s (data %s)", self.bootstrap_servers, self.data_dir)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                ending_with_parent(self.command),  # the JVM ends with us, SIGKILL included
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the broker cleanly
            )
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        self._wait_ready()
        return self

    def _format(self, base: list[str], props: Path) -> None:
        cmd = [*base, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(props)]
        cmd += self.format_args
        with open(self.log_path, "ab") as out:
            code = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
        if code != 0:
            raise BrokerStartError(
                f"formatting storage in {self.data_dir} failed (exit {code})",
                command=cmd,
                log_tail=tail_lines(self.log_path),
            )

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.start_timeout
        admin: AdminClient | None = None
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                self._fail(f"Kafka broker exited with code {code} before it was ready")
            if time.monotonic() > deadline:
                self.kill()
                self._fail(f"Kafka broker did not answer metadata within {self.start_timeout:g} s")
            if admin is None and _port_open(self.port):  # avoid librdkafka's refused-noise
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.list_topics(timeout=2)
                    if self._proc.poll() is None:
                        return
            time.sleep(0.1)

    def _fail(self, reason: str) -> None:
        raise BrokerStartError(reason, command=self.command, log_tail=tail_lines(self.log_path))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker gracefully (SIGTERM), killing it after ``timeout`` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("Kafka broker ignored SIGTERM for %g s; killing it", timeout)
                _kill_quietly(proc)
        self._proc = None

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self._proc is not None:
            _kill_quietly(self._proc)
        self._proc = None

    def close(self) -> None:
        """Stop the broker and remove the data dir if this broker created it."""
        self.stop()
        if self._owns_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0
