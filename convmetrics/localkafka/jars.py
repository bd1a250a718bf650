"""Locate the Kafka broker jars: ``$KAFKA_HOME/libs`` or a Maven-filled user cache.

The cache lives outside the repository (``$CONVMETRICS_CACHE_DIR`` or
``~/.cache/convmetrics``) so every checkout and every run reuses one download. A marker
file is written only after a complete download, and an ``fcntl`` lock keeps parallel
processes (pytest-xdist workers, two terminals) from downloading twice.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from convmetrics.localkafka.exceptions import JavaNotFoundError, KafkaJarsError

#: The one Kafka version this package runs; bump it here only.
KAFKA_VERSION = "4.1.1"
#: log4j2 binding for Kafka's slf4j logging (matches Kafka's own distribution).
LOG4J_VERSION = "2.24.3"
SCALA_VERSION = "2.13"

_MARKER = ".complete"


def cache_dir() -> Path:
    """Return the user cache root (``$CONVMETRICS_CACHE_DIR`` or ``~/.cache/convmetrics``)."""
    env = os.environ.get("CONVMETRICS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "convmetrics"


def find_java() -> str:
    """Return the path of the ``java`` executable, preferring ``$JAVA_HOME/bin/java``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise JavaNotFoundError(
            "java was not found on PATH: install a Java 17+ runtime "
            "(e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
        )
    return found


def render_pom(kafka_version: str = KAFKA_VERSION) -> str:
    """Return a packaging-pom whose runtime dependencies are the broker's classpath."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>convmetrics.localkafka</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def kafka_libs(
    kafka_home: Path | None = None,
    *,
    on_download: Callable[[str], None] | None = None,
) -> Path:
    """Return a directory holding the broker jars, downloading them once if needed.

    Args:
        kafka_home: An unpacked Kafka distribution; defaults to ``$KAFKA_HOME``.
        on_download: Called with a one-line notice before a (slow) download starts.

    Raises:
        KafkaJarsError: ``KAFKA_HOME`` has no jars, Maven is missing, or Maven failed.
    """
    home = kafka_home or (Path(os.environ["KAFKA_HOME"]) if os.environ.get("KAFKA_HOME") else None)
    if home is not None:
        libs = Path(home).expanduser() / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise KafkaJarsError(f"{libs} holds no kafka_*.jar: is KAFKA_HOME={home} a Kafka distribution?")
        return libs
    root = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs = root / "libs"
    if (root / _MARKER).is_file():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"kafka-{KAFKA_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / _MARKER).is_file():  # another process may have finished meanwhile
            if on_download is not None:
                on_download(f"downloading Kafka {KAFKA_VERSION} jars with Maven into {libs} (once)")
            _download(root, libs)
    return libs


def _download(root: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaJarsError(
            "Kafka jars are not cached and `mvn` was not found: install Maven "
            "(e.g. `apt-get install maven`) or set KAFKA_HOME to an unpacked "
            f"Kafka {KAFKA_VERSION} distribution"
        )
    staging = root / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(libs, ignore_errors=True)
    (root / "pom.xml").write_text(render_pom(), encoding="utf-8")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(root / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise KafkaJarsError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} jars (exit {done.returncode}); "
            f"check network access to Maven Central or set KAFKA_HOME.\n"
            f"command: {' '.join(cmd)}\n{output}"
        )
    staging.rename(libs)
    (root / _MARKER).write_text(f"kafka {KAFKA_VERSION}\n", encoding="utf-8")
