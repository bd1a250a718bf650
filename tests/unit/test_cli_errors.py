"""Every command's expected failure is one line, `convmetrics <command>: error: <cause>`, on
stderr, with exit status 2 where the cause is the command line or the settings, else 1
(docs/operations.md). Each case fails before any broker, server or store is needed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from convmetrics.cli import main


def _never_serve(*_: object) -> None:
    raise AssertionError("the command started serving instead of refusing")


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["consume"], 2, "convmetrics consume: error: no Kafka: pass --bootstrap-servers"),
        (["consume", "--bootstrap-servers", "h:1", "--kafka", "acks=1"], 2, "convmetrics consume: error: "),
        (["dlq", "replay"], 2, "convmetrics dlq replay: error: no Kafka"),
        (["gateway", "--kafka", "acks=1"], 2, "convmetrics gateway: error: invalid settings"),
        (
            ["produce", "{tmp}/missing.ndjson", "--no-progress", "--bootstrap-servers", "h:1"],
            2,
            "convmetrics produce: error: FILE {tmp}/missing.ndjson: No such file or directory",
        ),
        (["token", "new", "--accounts", "7,acme"], 2, "convmetrics token new: error: --accounts: "),
        (["token", "new", "--note", "x"], 2, "convmetrics token new: error: --note: "),
        (
            ["serve", "--store", "sqlite:///{tmp}/m.db", "--tokens-file", ""],
            2,
            "convmetrics serve: error: --tokens-file (CONVMETRICS_TOKENS_FILE) is empty",
        ),
        (
            ["demo", "--events", "0"],
            2,
            "convmetrics demo: error: argument --events: must be at least 1, got '0'",
        ),
        (["schemas", "check", "--dir", "{tmp}/none"], 2, "convmetrics schemas check: error: schema folder"),
        # an empty folder is no contract that checks (it said OK)
        (
            ["schemas", "check", "--dir", "{tmp}"],
            2,
            "convmetrics schemas check: error: schema folder {tmp} holds no",
        ),
        (
            ["schemas", "push", "--schema-registry-url", "notaurl"],
            2,
            "convmetrics schemas push: error: schema registry URL 'notaurl'",
        ),
        # argparse's refusals name the flag and the value, never a Python function (`_port`)
        (
            ["serve", "--port", "abc"],
            2,
            "convmetrics serve: error: argument --port: must be a port from 1 to",
        ),
        (
            ["consume", "--flush-interval", "abc"],
            2,
            "convmetrics consume: error: argument --flush-interval: must be a number of seconds above 0",
        ),
        (
            ["consume", "--flush-events", "x"],
            2,
            "convmetrics consume: error: argument --flush-events: must be a",
        ),
        (
            ["broker", "--port", "70000"],
            2,
            "convmetrics broker: error: argument --port: must be a port from 1",
        ),
        (["demo", "--api-port", "70000"], 2, "convmetrics demo: error: argument --api-port: must be a port"),
        (
            ["--log-level", "loud", "schemas", "list"],
            2,
            "convmetrics: error: argument --log-level: must be one of",
        ),
        # serve opens its store at the first request: the URL's form is checked at once
        (["serve", "--store", "bogus://x"], 2, "convmetrics serve: error: unsupported store URL 'bogus://x'"),
        # a tokens file it cannot read: refused before the banner that names its URLs
        (["serve", "--tokens-file", "{tmp}/no-tokens"], 2, "convmetrics serve: error: "),
        (
            ["metrics", "--store", "bogus://x"],
            2,
            "convmetrics metrics: error: unsupported store URL 'bogus://x'",
        ),
        (
            ["generate", "--duplicate-rate", "2"],
            2,
            "convmetrics generate: error: --duplicate-rate must be in [0, 1)",
        ),
        (
            ["generate", "--events", "10", "-o", "{tmp}/no/x.ndjson"],
            2,
            "convmetrics generate: error: --output {tmp}/no/x.ndjson: No such file or directory",
        ),
        (["metrics", "--store", "sqlite:///{tmp}/none.db"], 1, "convmetrics metrics: error: no store at"),
        (["generate", "--events", "-5"], 2, "convmetrics generate: error: "),
        # a store URL that is not one: a setting (2), shown without its password
        (
            ["consume", "--bootstrap-servers", "h:1", "--store", "postgresql+psycopg://u:S3cret@db/m"],
            2,
            "convmetrics consume: error: unsupported store URL 'postgresql+psycopg://u:***@db/m'",
        ),
        (
            ["consume", "--bootstrap-servers", "h:1", "--store", "mysql://db/m?password=S3cret"],
            2,
            "convmetrics consume: error: unsupported store URL 'mysql://db/m?password=***'",
        ),
        (["consume", "--retention-1h", "-1"], 2, "usage: "),  # would delete every 1-hour row
        (["consume", "--conversation-ttl-days", "0"], 2, "usage: "),
        (["consume", "--max-conversations", "0"], 2, "usage: "),
        # a bound past what a duration holds failed the first commit (an OverflowError)
        (["consume", "--sla-buckets", "1d,99999999999999999999d"], 2, "usage: "),
        (["serve", "--sla-buckets", "\u00b2h"], 2, "usage: "),
        (["consume", "--http-port", "70000"], 2, "usage: "),
        (["serve", "--max-label-values", "1001"], 2, "usage: "),
        (["dlq", "replay", "--idle-timeout", "0"], 2, "usage: "),
        # librdkafka read the port as 0 and retried kafka:0 forever; an empty group aborted
        # the process in the client's C code (SIGABRT)
        (["consume", "--bootstrap-servers", "kafka:9o92"], 2, "usage: "),
        (["dlq", "replay", "--bootstrap-servers", "h:1", "--group", " "], 2, "usage: "),
        (["demo", "--bootstrap-servers", "h:0", "--once"], 2, "usage: "),
        (
            ["gateway", "--bootstrap-servers", "kafka:9o92"],
            2,
            "convmetrics gateway: error: invalid settings: --bootstrap-servers (or "
            "CONVMETRICS_BOOTSTRAP_SERVERS): must be host:port[,host:port...], got 'kafka:9o92'",
        ),
        # a flag the command would ignore is refused (docs/operations.md), not dropped
        (
            ["consume", "--bootstrap-servers", "h:1", "--tokens-file", "t", "--max-label-values", "5"],
            2,
            "convmetrics consume: error: --tokens-file, --max-label-values without --http-port",
        ),
        (
            ["gateway", "--bootstrap-servers", "h:1", "--port", "0"],
            2,
            "convmetrics gateway: error: invalid settings: --port (or ",
        ),
        # no Kafka named: refused as by consume (it ran a gateway never ready on 127.0.0.1:9092)
        (
            ["gateway"],
            2,
            "convmetrics gateway: error: invalid settings: --bootstrap-servers (or "
            "CONVMETRICS_BOOTSTRAP_SERVERS): required (`convmetrics broker` starts a local Kafka)",
        ),
        (
            ["produce", "-"],
            2,
            "convmetrics produce: error: invalid settings: --bootstrap-servers (or "
            "CONVMETRICS_BOOTSTRAP_SERVERS): required",
        ),
    ],
)
def test_a_failure_is_one_line_naming_the_command(
    argv: list[str],
    status: int,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVMETRICS_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("uvicorn.Server.run", _never_serve)  # a check that let serve start: fail
    try:
        got = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # what `convmetrics` exits with (argparse's way, too)
        got = exc.code
    assert got == status
    out, text = capsys.readouterr()
    err = text.strip().splitlines()
    assert err and err[-1 if says != "usage: " else 0].startswith(says.replace("{tmp}", str(tmp_path))), err
    assert not any("S3cret" in line for line in err), err
    assert "metrics API on" not in out  # no banner of a server that never ran


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--host", "127.0.0.1", "--store", "sqlite:///{tmp}/m.db"],
        ["gateway", "--host", "127.0.0.1", "--bootstrap-servers", "h:1"],
        [
            "consume",
            "--http-host",
            "127.0.0.1",
            "--bootstrap-servers",
            "h:1",
            "--store",
            "sqlite:///{tmp}/m.db",
        ],
    ],
    ids=["serve", "gateway", "consume"],
)
def test_a_port_in_use_is_one_line_and_status_1_before_anything_starts(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn exited 3 once the gateway's start-up had begun (its topic was made after it
    said it stopped), and on `consume`'s API thread left the consumer running without it."""
    monkeypatch.setattr("uvicorn.Server.run", _never_serve)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flag = "--http-port" if argv[0] == "consume" else "--port"
        got = main([a.replace("{tmp}", str(tmp_path)) for a in argv] + [flag, str(port)])
    out, err = capsys.readouterr()
    assert got == 1
    assert err.strip().splitlines()[-1] == (
        f"convmetrics {argv[0]}: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "metrics API on" not in out


@pytest.mark.parametrize(
    ("env", "argv", "says"),
    [
        (
            {"CONVMETRICS_METRIC_SET": "big"},
            ["metrics"],
            "argument --metric-set: must be one of closures, full, got 'big' (from the flag, or else "
            "CONVMETRICS_METRIC_SET)",
        ),
        # Kubernetes sets <SERVICE>_PORT=tcp://... for a Service named convmetrics
        ({"CONVMETRICS_PORT": "tcp://10.0.0.1:8080"}, ["serve"], "(from the flag, or else CONVMETRICS_PORT)"),
        ({"CONVMETRICS_LOG_LEVEL": "LOUD"}, ["schemas", "list"], "or else CONVMETRICS_LOG_LEVEL)"),
        ({"CONVMETRICS_LOG_LEVEL": "warning"}, ["schemas", "list"], ""),  # any case
        # an empty variable, as a template leaves it
        ({"CONVMETRICS_GROUP": ""}, ["consume", "--bootstrap-servers", "h:1"], "or else CONVMETRICS_GROUP)"),
        ({"CONVMETRICS_BOOTSTRAP_SERVERS": "kafka:"}, ["consume"], "or else CONVMETRICS_BOOTSTRAP_SERVERS)"),
    ],
)
def test_a_bad_value_from_the_environment_names_the_variable(
    env: dict[str, str],
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("uvicorn.Server.run", _never_serve)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        got = main(argv)
    except SystemExit as exc:
        got = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    if not says:
        assert got == 0 and not err, err
        return
    assert got == 2 and err and err[-1].endswith(says), err


def test_a_reader_that_stops_early_ends_the_writer_quietly() -> None:
    """`convmetrics generate | head -1`: a broken pipe, not a traceback."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "convmetrics", "generate", "--events", "50000", "--no-progress"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline().startswith(b'{"event"')
        child.stdout.close()
        err = child.stderr.read().decode()
        assert child.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_store_of_a_newer_release_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store a newer release upgraded (`consumer.store.store_format`) is refused by the
    commands that open it, naming both formats, before they read or write anything."""
    from consumer.store import store_format
    from consumer.store.sqlite import SqliteStore

    ours = store_format.FORMAT
    monkeypatch.setattr(store_format, "FORMAT", ours + 1)
    SqliteStore(str(tmp_path / "m.db")).close()
    monkeypatch.setattr(store_format, "FORMAT", ours)
    assert main(["metrics", "--store", f"sqlite:///{tmp_path}/m.db"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"convmetrics metrics: error: store {tmp_path}/m.db is in format {ours + 1}, made by a newer "
        f"convmetrics release; this release reads and writes format {ours} only"
    ), err


def test_a_bug_in_json_mode_is_one_logged_record_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`--log-format json`: an unexpected exception (a bug) is logged, traceback and all,
    as one record a log pipeline keeps whole, exit 1; in text mode it is raised as ever."""

    def broken(_args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr("consumer.cli.parsers._token_new", broken)
    with caplog.at_level("CRITICAL", logger="convmetrics"):
        assert main(["--log-format", "json", "token", "new"]) == 1
    (record,) = caplog.records
    assert record.getMessage() == "convmetrics token new: crashed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"
    with pytest.raises(RuntimeError, match="a bug"):
        main(["token", "new"])
