"""Argument parsing of `convmetrics broker` (the run itself is an integration test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from convmetrics.cli import build_parser
from convmetrics.localkafka import cli


def test_broker_flags_parse() -> None:
    args = build_parser().parse_args(
        ["broker", "--port", "19092", "--data-dir", "/tmp/k", "--kafka-home", "/opt/kafka"]
    )
    assert args.func is cli.run_broker
    assert (args.port, args.data_dir, args.kafka_home) == (
        19092,
        Path("/tmp/k"),
        Path("/opt/kafka"),
    )


def test_broker_help_mentions_java_and_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["broker", "--help"])
    # argparse wraps to the terminal width, and the help holds the cache path ($HOME): words
    # may land on either side of a line break
    out = " ".join(capsys.readouterr().out.split())
    assert "Java 17" in out and "bootstrap servers" in out and "--data-dir" in out
