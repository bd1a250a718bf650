"""The Kafka Streams peer: builds the Maven project in bench/peers/kstreams once, then runs it.

    .venv/bin/python bench/peers/kstreams_peer.py --build-only     # fetch and compile (once)

Run by run.py like the other peers, with one more input in ``--workdir``: ``expected.tsv``,
the final output the scan predicts (``output_line`` rows). This process becomes the JVM
(``os.execv``), so the CPU time and peak RSS run.py sees for it are the JVM's.
``--option ttc=off`` drops the time-to-close join (the Quix/Faust peers' job only);
``CONVMETRICS_KSTREAMS_JVM_OPTS`` adds JVM options, e.g. to profile:
``-XX:StartFlightRecording=filename=/tmp/ks.jfr,settings=profile``.

The build goes to ``<cache>/kstreams/<kafka version>-<source hash>`` (``~/.cache/convmetrics``,
file-locked, marked complete only after Maven succeeds): Kafka Streams at the broker's
version (``convmetrics.localkafka.jars.KAFKA_VERSION``), Apache Avro, slf4j-simple, from
Maven Central through ``mvn``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

from peerlib import GRACE_SECONDS, START_DAYS, child_args, parse_ends  # noqa: E402

from consumer.fold.model import READER_SCHEMA  # noqa: E402
from convmetrics.localkafka.jars import KAFKA_VERSION, cache_dir, find_java  # noqa: E402
from schemas import CONVERSATION_EVENT  # noqa: E402

PROJECT = HERE / "kstreams"
MAIN = "convmetrics.bench.KStreamsPeer"
EXPECTED_FILE = "expected.tsv"
JVM_OPTS_ENV = "CONVMETRICS_KSTREAMS_JVM_OPTS"


def _pom_property(name: str) -> str:
    m = re.search(rf"<{name}>([^<]+)</{name}>", (PROJECT / "pom.xml").read_text())
    return m.group(1) if m else "unknown"


#: The Apache Avro (Java) version the peer is built with (pom.xml).
AVRO_JAVA = _pom_property("avro.version")
_MARKER = ".complete"


class KStreamsBuildError(RuntimeError):
    """Maven is missing or could not build the Kafka Streams peer."""


def _sources() -> list[Path]:
    return sorted([PROJECT / "pom.xml", *PROJECT.glob("src/**/*.java")])


def build_dir() -> Path:
    """Where the build for this Kafka version and these sources lives (in the user cache)."""
    h = hashlib.sha256(KAFKA_VERSION.encode())
    for p in _sources():
        h.update(p.relative_to(PROJECT).as_posix().encode() + b"\0" + p.read_bytes())
    return cache_dir() / "kstreams" / f"{KAFKA_VERSION}-{h.hexdigest()[:12]}"


def ensure_built(log: bool = True) -> Path:
    """The classpath root of the built peer (``target/``), building it once with Maven."""
    root = build_dir()
    target = root / "target"
    if (root / _MARKER).is_file():
        return target
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / _MARKER).is_file():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KStreamsBuildError(
                "the Kafka Streams peer needs Maven to build: install it (`apt-get install maven`)"
            )
        if log:
            print(f"building the Kafka Streams peer (Kafka {KAFKA_VERSION}) with Maven into {root} (once)")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(PROJECT, root)
        cmd = [mvn, "-q", "-B", "-f", str(root / "pom.xml"), f"-Dkafka.version={KAFKA_VERSION}", "package"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise KStreamsBuildError(
                f"Maven could not build the Kafka Streams peer (exit {done.returncode}); check access "
                f"to Maven Central.\ncommand: {' '.join(cmd)}\n{tail}"
            )
        (root / _MARKER).write_text(f"kafka {KAFKA_VERSION}\n", encoding="utf-8")
    return target


def java_command(target: Path, argv: list[str]) -> list[str]:
    classpath = os.pathsep.join([str(target / "kstreams-peer-1.jar"), str(target / "libs" / "*")])
    return [
        find_java(),
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        *shlex.split(os.environ.get(JVM_OPTS_ENV, "")),
        "-cp",
        classpath,
        MAIN,
        *argv,
    ]


def main() -> None:
    if sys.argv[1:] == ["--build-only"]:
        print(ensure_built())
        return
    args = child_args(__doc__ or "")
    ends = parse_ends(args.ends)
    ttc = dict(o.split("=", 1) for o in args.option).get("ttc", "on")
    target = ensure_built(log=False)
    work = Path(args.workdir)
    reader = work / "reader.avsc"
    reader.write_text(json.dumps(READER_SCHEMA))
    writers = sorted((ROOT / "schemas" / CONVERSATION_EVENT).glob("v*.avsc"))
    argv = [
        "--bootstrap", args.bootstrap,
        "--topic", args.topic,
        "--total", str(sum(ends.values())),
        "--group", args.group,
        "--output", f"{args.group}-output",
        "--workdir", str(work),
        "--grace-seconds", str(GRACE_SECONDS),
        "--start-days", str(START_DAYS),
        "--ttc", ttc,
        "--reader-schema", str(reader),
        "--expected", str(work / EXPECTED_FILE),
        *(x for w in writers for x in ("--writer-schema", str(w))),
    ]  # fmt: skip
    cmd = java_command(target, argv)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
