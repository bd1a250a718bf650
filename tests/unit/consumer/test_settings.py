"""`convmetrics consume`'s retention and dedupe flags: their defaults are the documented
ones (docs/operations.md), and each flag reaches the consumer's settings."""

from __future__ import annotations

import pytest

from consumer.cli import consumer_settings
from consumer.fold.registry import METRIC_SETS
from consumer.store import Retention
from consumer.stream.settings import FLUSH_EVENTS, ConsumerSettings
from convmetrics.cli import build_parser

DAY = 86400


def settings(*flags: str) -> ConsumerSettings:
    args = build_parser().parse_args(["consume", "--bootstrap-servers", "k:9092", *flags])
    return consumer_settings(args)


def test_the_defaults_are_the_documented_ones() -> None:
    s = settings()
    assert s.dedupe_per_conversation == 256  # event ids per conversation
    assert s.conversation_ttl == 30 * DAY
    assert s.max_conversations == 5_000_000  # per partition
    assert s.retention == Retention(minute=2 * DAY, hour=90 * DAY, day=None, all=None)
    assert s.retention.for_window("all") is None
    # the flags' defaults and the settings' own defaults are the same figures
    bare = ConsumerSettings(bootstrap_servers="k:9092")
    fields = ("dedupe_per_conversation", "conversation_ttl", "max_conversations", "retention")
    assert [getattr(s, f) for f in fields] == [getattr(bare, f) for f in fields]


def test_each_flag_reaches_the_settings() -> None:
    s = settings(
        "--dedupe-per-conversation", "8", "--conversation-ttl-days", "0.5", "--max-conversations", "10",
        "--retention-1m", "0.25", "--retention-1h", "3", "--retention-1d", "400",
    )  # fmt: skip
    assert (s.dedupe_per_conversation, s.conversation_ttl, s.max_conversations) == (8, DAY // 2, 10)
    assert s.retention == Retention(minute=DAY // 4, hour=3 * DAY, day=400 * DAY, all=None)


def test_the_help_states_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["consume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    commits = "100,000 with --metric-set closures, 35,000 with --metric-set full"
    for said in ("(default 2)", "(default 90)", "(default: forever)", "(default 30)", "(default 256)",
                 "(default 5,000,000)", commits):  # fmt: skip
        assert said in text, said


@pytest.mark.parametrize(("flags", "events"), [
    ((), 100_000),  # the default metric set (closures): its commits cost the store per commit
    (("--metric-set", "full"), 35_000),  # the full set: its memory budget
    (("--flush-events", "7"), 7),  # the flag wins over either
    (("--metric-set", "full", "--flush-events", "200000"), 200_000),
])  # fmt: skip
def test_the_commit_size_is_the_metric_sets_unless_given(flags: tuple[str, ...], events: int) -> None:
    assert settings(*flags).commit_events == events


def test_every_metric_set_has_a_commit_size() -> None:
    assert ConsumerSettings("k:9092", metric_set="full").commit_events == FLUSH_EVENTS["full"]
    assert set(FLUSH_EVENTS) == set(METRIC_SETS)
    assert ConsumerSettings("k:9092", flush_events=0).commit_events == 0  # given, though falsy
