"""A catching-up consumer's progress lines (consumer.stream.progress), at their boundaries."""

from __future__ import annotations

from consumer.stream.progress import Progress

NOT_GAINING = "not gaining on the topic: records arrive as fast as they are consumed"


def test_a_lag_under_the_poll_batch_is_never_logged() -> None:
    p = Progress(behind=10_000)
    assert all(p.update(t, t * 1_000, 9_999) is None for t in range(0, 300, 5))


def test_a_lag_of_exactly_the_poll_batch_is_behind() -> None:
    p = Progress(behind=10_000, every=30)
    assert p.update(0.0, 0, 10_000) is None  # fell behind: the first line comes after `every`
    assert p.update(30.0, 30_000, 10_000) == (
        "catching up: 10,000 records behind, 1,000 records/s; " + NOT_GAINING
    )


def test_a_line_every_interval_with_its_pace() -> None:
    p = Progress(behind=10_000, every=30)
    assert p.update(100.0, 0, 100_000) is None
    assert p.update(129.9, 59_800, 40_200) is None
    assert p.update(130.0, 60_000, 40_000) == (
        "catching up: 40,000 records behind, 2,000 records/s; caught up in ~20 s at this pace"
    )
    assert p.update(159.9, 100_000, 50_000) is None  # `every` from the last line, not the first
    assert p.update(160.0, 120_000, 40_000) == (
        "catching up: 40,000 records behind, 2,000 records/s; " + NOT_GAINING
    )
    assert p.update(190.0, 180_000, 10_000) == (
        "catching up: 10,000 records behind, 2,000 records/s; caught up in ~10 s at this pace"
    )
    assert p.update(195.0, 190_000, 9_999) == "caught up: 190,000 records in 95 s (2,000 records/s)"


def test_caught_up_is_logged_once_after_progress_was() -> None:
    p = Progress(behind=10_000, every=30)
    p.update(0.0, 0, 1_000_000)
    assert p.update(3_600.0, 7_200_000, 600_000) == (
        "catching up: 600,000 records behind, 2,000 records/s; caught up in ~90 min at this pace"
    )
    assert p.update(3_700.0, 7_400_000, 9_999) == "caught up: 7,400,000 records in 62 min (2,000 records/s)"
    assert p.update(3_705.0, 7_401_000, 0) is None  # once
    # behind again: a new episode, its first line after `every` again
    assert p.update(4_000.0, 8_000_000, 50_000) is None
    assert p.update(4_029.0, 8_100_000, 40_000) is None


def test_a_stalled_consumer_says_so() -> None:
    p = Progress(behind=10_000, every=30)
    p.update(0.0, 500, 80_000)
    assert p.update(30.0, 500, 90_000) == "catching up: 90,000 records behind, none consumed in the last 30 s"
    assert p.update(60.0, 501, 90_000) == ("catching up: 90,000 records behind, 0 records/s; " + NOT_GAINING)


def test_a_short_lag_caught_up_before_any_line_is_not_logged() -> None:
    p = Progress(behind=10_000, every=30)
    assert p.update(0.0, 0, 50_000) is None
    assert p.update(25.0, 60_000, 0) is None
    assert p.update(60.0, 60_000, 0) is None
