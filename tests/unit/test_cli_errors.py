"""Every command's expected failure is one line, `convmetrics <command>: error: <cause>`, on
stderr, with exit status 2 where the cause is the command line or the settings, else 1
(docs/operations.md). Each case fails before any broker, server or store is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from convmetrics.cli import main


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["consume"], 2, "convmetrics consume: error: no Kafka: pass --bootstrap-servers"),
        (["consume", "--bootstrap-servers", "h:1", "--kafka", "acks=1"], 2, "convmetrics consume: error: "),
        (["dlq", "replay"], 2, "convmetrics dlq: error: no Kafka"),
        (["gateway", "--kafka", "acks=1"], 2, "convmetrics gateway: error: invalid gateway settings"),
        (["produce", "{tmp}/missing.ndjson", "--no-progress"], 2, "convmetrics produce: error: "),
        (["token", "new", "--accounts", "7,acme"], 2, "convmetrics token: error: --accounts: "),
        (["demo", "--events", "0"], 2, "convmetrics demo: error: --events must be positive, got 0"),
        (["schemas", "check", "--dir", "{tmp}/none"], 2, "convmetrics schemas: error: schema folder"),
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
    try:
        got = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # what `convmetrics` exits with (argparse's way, too)
        got = exc.code
    assert got == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1 if says != "usage: " else 0].startswith(says.replace("{tmp}", str(tmp_path))), err
    assert not any("S3cret" in line for line in err), err
