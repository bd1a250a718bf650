"""Apicurio Registry in a child JVM: the Confluent-compatible API at ``/apis/ccompat/v7``.

The runnable app (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``, a Quarkus
"legacy jar": a runner jar beside its ``lib/``) is fetched once from Maven Central with
Maven, as the Kafka jars are, and unpacked into ``~/.cache/convmetrics`` (or
``$CONVMETRICS_CACHE_DIR``); a marker file is written only after a complete unpack, under
an ``fcntl`` lock. Storage is in memory: a registry lives as long as its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from convmetrics.localkafka.broker import HOST, pick_free_port, tail_lines
from convmetrics.localkafka.exceptions import LocalKafkaError
from convmetrics.localkafka.jars import cache_dir, find_java
from convmetrics.process import ending_with_parent

log = logging.getLogger(__name__)

#: 2.6.x runs on Java 17 (3.x needs 21); bump it here only
APICURIO_VERSION = "2.6.13.Final"
CCOMPAT_PATH = "/apis/ccompat/v7"
URL_ENV = "CONVMETRICS_SCHEMA_REGISTRY_URL"
JVM_FLAGS: tuple[str, ...] = ("-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")
_MARKER = ".complete"


class LocalRegistryError(LocalKafkaError):
    """The local registry could not be fetched or started (the message says why)."""


def apicurio_home(*, on_download: Callable[[str], None] | None = None) -> Path:
    """The unpacked Apicurio app (its runner jar and ``lib/``), fetched once."""
    root = cache_dir() / f"apicurio-registry-{APICURIO_VERSION}"
    if (root / _MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"apicurio-registry-{APICURIO_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / _MARKER).is_file():
            if on_download is not None:
                on_download(f"downloading Apicurio Registry {APICURIO_VERSION} with Maven into {root} (once)")
            _download(root)
    return root


def _download(root: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalRegistryError(
            "Apicurio Registry is not cached and `mvn` was not found: install Maven "
            "(e.g. `apt-get install maven`) or set CONVMETRICS_SCHEMA_REGISTRY_URL to a running registry"
        )
    shutil.rmtree(root, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        artifact = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
        cmd = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={tmp}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise LocalRegistryError(
                f"Maven could not fetch {artifact} (exit {done.returncode}); check network access to "
                f"Maven Central.\ncommand: {' '.join(cmd)}\n{output}"
            )
        staging = Path(tmp) / "app"
        with tarfile.open(archives[0]) as tar:
            tar.extractall(staging, filter="data")
        if not list(staging.glob("*-runner.jar")):
            raise LocalRegistryError(f"{archives[0].name} holds no *-runner.jar: not the runnable app")
        staging.rename(root)
    (root / _MARKER).write_text(f"apicurio-registry {APICURIO_VERSION}\n", encoding="utf-8")


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class LocalRegistry:
    """One Apicurio Registry process with in-memory storage on a free port.

    Args:
        port: HTTP port; a free one is picked when omitted.
        start_timeout: seconds `start` waits for the Confluent API to answer.
        on_download: called with a notice before the first, slow, download.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float = 90.0,
        on_download: Callable[[str], None] | None = None,
    ) -> None:
        self.port = port or pick_free_port()
        self.start_timeout = start_timeout
        self.on_download = on_download
        self.log_path = Path(tempfile.mkstemp(prefix="apicurio-", suffix=".log")[1])
        self.command: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        """The Confluent-compatible API (what `CONVMETRICS_SCHEMA_REGISTRY_URL` takes)."""
        return f"http://{HOST}:{self.port}{CCOMPAT_PATH}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalRegistry:
        """Start the registry and wait until its Confluent API answers."""
        if self.running:
            return self
        home = apicurio_home(on_download=self.on_download)
        runner = next(home.glob("*-runner.jar"))
        self.command = [
            find_java(), *JVM_FLAGS, f"-Dquarkus.http.port={self.port}", f"-Dquarkus.http.host={HOST}",
            "-Dquarkus.log.level=WARN", "-jar", str(runner),
        ]  # fmt: skip
        log.info("starting Apicurio Registry on %s", self.url)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                ending_with_parent(self.command), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=home,
            )  # fmt: skip
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._fail(f"Apicurio Registry exited with code {code} before it was ready")
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"Apicurio Registry did not answer within {self.start_timeout:g} s")
            probe = f"{self.url}/subjects"
            with contextlib.suppress(OSError), urllib.request.urlopen(probe, timeout=2) as answer:
                if answer.status == 200:
                    return self
            time.sleep(0.2)

    def _fail(self, reason: str) -> None:
        raise LocalRegistryError(
            f"{reason}\ncommand: {' '.join(self.command)}\n--- last lines of its log ---\n"
            f"{tail_lines(self.log_path)}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_quietly(proc)
        self._proc = None

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def schema_registry_url(on_download: Callable[[str], None] | None = None) -> Iterator[str]:
    """``$CONVMETRICS_SCHEMA_REGISTRY_URL`` (start nothing), else a `LocalRegistry`'s URL."""
    external = os.environ.get(URL_ENV, "").strip()
    if external:
        yield external
        return
    with LocalRegistry(on_download=on_download) as registry:
        yield registry.url
