import pytest

from consumer.exceptions import QueryError
from consumer.serve.query import decode_cursor, encode_cursor, parse_query, response_json
from consumer.store import MetricRow
from support.rows import make_row


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window": "1h"}, "by must be .*: it is missing"),
        ({"by": "team", "window": "1h"}, "by must be .*: got 'team'"),
        ({"by": "account", "window": "5m"}, "window must be .*: got '5m'"),
        ({"by": "account"}, "window must be one of 1m, 1h, 1d, all for by=account: it is missing"),
        ({"by": "account", "window": "1h", "from": "yesterday"}, "from must be an integer"),
        ({"by": "account", "window": "1h", "from": "10", "to": "5"}, "before from"),
        ({"by": "account", "window": "all", "from": "10"}, "all-time"),
        ({"by": "account", "window": "1h", "limit": "0"}, "limit must be"),
        ({"by": "account", "window": "1h", "limit": "100001"}, "limit must be"),
        ({"by": "account", "window": "1h", "key": "acme"}, "account id"),
        ({"by": "account", "window": "1h", "cursor": "!!"}, "cursor"),
        ({"by": "account", "window": "1h", "colour": "red"}, "unknown parameter"),
        ({"by": "account", "window": "all", "sort": "-colour"}, "sort must be one of key, closures"),
        ({"by": "account", "window": "all", "sort": "-colour"}, r"two of those \(reopens/closures\)"),
        ({"by": "account", "window": "all", "sort": "time_to_close.p50"}, "sort must be"),
        ({"by": "account", "window": "all", "sort": "closures/closures"}, "sort must be"),
        ({"by": "account", "window": "all", "sort": "closures", "key": "7"}, "leave one out"),
        (
            {"by": "account", "window": "all", "sort": "closures", "cursor": encode_cursor(0, "7")},
            "sorted listing",
        ),
    ],
)
def test_bad_parameters_say_what_is_wrong(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(params)


def test_good_parameters() -> None:
    q = parse_query(
        {"by": "channel_type", "window": "1m", "key": "VIBER", "from": "60", "to": "120", "limit": "5"}
    )
    assert (q.by, q.window, q.key, q.start_from, q.start_to, q.limit) == (
        "channel_type",
        "1m",
        "VIBER",
        60,
        120,
        5,
    )
    assert parse_query({"by": "account", "window": "all"}).limit == 10_000


def test_sort_and_contains() -> None:
    q = parse_query({"by": "account", "window": "all", "sort": "-closed_unread/closures", "contains": "42"})
    assert (q.sort, q.descending, q.offset, q.contains, q.key) == (
        "closed_unread/closures",
        True,
        0,
        "42",
        None,
    )
    q = parse_query({"by": "account", "window": "all", "sort": "time_to_close.mean", "limit": "2"})
    assert (q.sort, q.descending) == ("time_to_close.mean", False)
    rows = [row(0, "1"), row(0, "2"), row(0, "3")]
    body = response_json(q, rows, total=40)
    assert list(body) == ["by", "window", "sort", "total", "rows", "next"]
    assert (body["sort"], body["total"], [r["key"] for r in body["rows"]]) == (
        "time_to_close.mean",
        40,
        ["1", "2"],
    )
    following = parse_query(
        {"by": "account", "window": "all", "sort": "time_to_close.mean", "cursor": body["next"]}
    )
    assert following.offset == 2 and following.ranking().offset == 2 and following.ranking().limit == 10_001
    assert response_json(q, rows[:2], total=2)["next"] is None
    assert parse_query({"by": "channel_type", "window": "1h", "contains": "SM"}).contains == "SM"


def test_cursor_round_trips() -> None:
    assert decode_cursor(encode_cursor(3600, "TELEGRAM")) == (3600, "TELEGRAM")


def row(start: int, key: str) -> MetricRow:
    return make_row("channel_type", key, "1h", start, (4, 16), closures=3, reopens=1, closed_unread=1)


def test_response_shape_and_next_cursor() -> None:
    q = parse_query({"by": "channel_type", "window": "1h", "limit": "1"})
    body = response_json(q, [row(3600, "A"), row(3600, "B")])
    assert body["by"] == "channel_type" and body["window"] == "1h"
    (r,) = body["rows"]
    assert r == {
        "key": "A",
        "window_start": 3600,
        "window_end": 7200,
        "closures": 3,
        "reopens": 1,
        "closed_unread": 1,
        "time_to_close": {
            "count": 2,
            "sum": 20,
            "min": 4,
            "max": 16,
            "mean": 10.0,
            "p50": r["time_to_close"]["p50"],  # the sketch's (below)
            "p90": r["time_to_close"]["p90"],
            "p99": r["time_to_close"]["p99"],
        },
        "ingest_lag": {"count": 0, "mean": None, "max": None, "p50": None, "p90": None, "p99": None},
    }
    for p in ("p50", "p90", "p99"):  # of two values: the lower one, within 1%, clamped into [4, 16]
        assert r["time_to_close"][p] == pytest.approx(4, rel=0.01) and r["time_to_close"][p] >= 4
    assert decode_cursor(body["next"]) == (3600, "A")
    assert response_json(q, [row(3600, "A")])["next"] is None


def test_all_time_rows_have_null_bounds_and_empty_durations() -> None:
    q = parse_query({"by": "channel_type", "window": "all"})
    r = make_row("channel_type", "A", "all", 0, closures=1)
    out = response_json(q, [r])["rows"][0]
    assert out["window_start"] is None and out["window_end"] is None
    assert out["time_to_close"]["mean"] is None and out["time_to_close"]["p50"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"from": "60", "to": "60"},  # from == to: the one window starting there
        {"limit": "1"},
        {"limit": "100000"},  # MAX_LIMIT itself
        {"keys": ",".join(str(i) for i in range(1000))},  # MAX_KEYS keys
        {"from": str(-(2**63)), "to": str(2**63 - 1)},  # the 64-bit range's own ends
        {"cursor": encode_cursor(2**63 - 1, "7")},
    ],
)
def test_parameters_at_their_limits_are_accepted(params: dict[str, str]) -> None:
    parse_query({"by": "account", "window": "1m", **params})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"keys": ",".join(str(i) for i in range(1001))}, "at most 1000"),
        ({"from": str(-(2**63) - 1)}, "from must fit in 64 bits"),
        ({"to": str(2**63)}, "to must fit in 64 bits"),
        ({"cursor": encode_cursor(0, "7")[:-2] + "!!"}, "cursor"),
    ],
)
def test_parameters_one_past_their_limits_are_refused(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query({"by": "account", "window": "1m", **params})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"by": "inbox"}, r"by=inbox: this store counts by channel_type, account \(--metric-set\)"),
        (
            {"by": "account,channel_type"},
            r"by=account,channel_type: this store counts by channel_type, account",
        ),
        ({"by": "team"}, "by must be channel_type or account: got 'team'"),
        (
            {"by": "account", "sort": "-created"},
            r"sort=-created: not in this store's metric set \(--metric-set\)",
        ),
        ({"by": "account", "sort": "assignments/closures"}, "not in this store's metric set"),
        ({"by": "account", "sort": "-colour"}, "sort must be one of key, closures, reopens"),
    ],
)
def test_a_stores_metric_set_says_what_by_and_sort_may_name(params: dict[str, str], message: str) -> None:
    """`parse_query(params, registry)`: the closures set refuses the groupings and values only
    the full set has, naming --metric-set; what no set has is refused listing the store's."""
    from consumer.fold.registry import CLOSURES

    with pytest.raises(QueryError, match=message):
        parse_query({"window": "all", **params}, CLOSURES)


def test_what_the_full_set_has_is_accepted() -> None:
    from consumer.fold.registry import CLOSURES, REGISTRY

    q = parse_query({"by": "account", "window": "all", "sort": "-created"}, REGISTRY)
    assert (q.sort, q.descending) == ("created", True)
    assert parse_query({"by": "inbox", "window": "1h"}, REGISTRY).by == "inbox"
    assert parse_query({"by": "inbox", "window": "1m"}, REGISTRY).window == "1m"  # every window
    with pytest.raises(QueryError, match="by must be channel_type or account or"):  # stored, not served
        parse_query({"by": "source", "window": "1h"}, REGISTRY)
    for spelling in ("channel-type", "channel_type"):  # both spellings, in either set
        assert parse_query({"by": spelling, "window": "1h"}, CLOSURES).by == "channel_type"
    assert parse_query({"by": "account", "window": "all", "sort": "closures"}, CLOSURES).sort == "closures"
    with pytest.raises(QueryError, match="account id"):  # an integer grouping of the store's set
        parse_query({"by": "account", "window": "all", "keys": "1,x"}, CLOSURES)


def test_listed_starts_at_their_bounds() -> None:
    from consumer.store.rows import MAX_LISTED_STARTS, listed_starts

    assert listed_starts(3600, 3 * 3600, 3600) == [3600, 7200]  # from in, to out
    assert listed_starts(3601, 3 * 3600 + 1, 3600) == [7200, 10800]
    assert listed_starts(-3601, 0, 3600) == [-3600]
    assert listed_starts(3601, 7200, 3600) == [] == listed_starts(10, 10, 60)
    assert listed_starts(None, 60, 60) is listed_starts(0, None, 60) is listed_starts(0, 60, None) is None
    assert len(listed_starts(0, 60 * MAX_LISTED_STARTS, 60) or []) == MAX_LISTED_STARTS
    assert listed_starts(0, 60 * MAX_LISTED_STARTS + 1, 60) is None  # one more: the range


def test_integer_keys_are_read_as_stored() -> None:
    """An account id however written (007, -0) names the stored key; a list of them too."""
    assert parse_query({"by": "account", "window": "all", "key": "007"}).key == "7"
    assert parse_query({"by": "account", "window": "all", "key": "-0"}).key == "0"
    assert parse_query({"by": "account", "window": "all", "keys": "007, 8,7"}).keys == ("7", "8")
    assert parse_query({"by": "channel_type", "window": "all", "keys": "SMS,007"}).keys == ("SMS", "007")
    with pytest.raises(QueryError, match="keys lists no key"):
        parse_query({"by": "account", "window": "all", "keys": ","})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9223372036854775807", None),
        ("-9223372036854775808", None),
        ("9223372036854775808", "must fit in 64 bits"),
        ("-9223372036854775809", "must fit in 64 bits"),
        ("0" * 30 + "1", "must fit in 64 bits"),
        ("--1", "must be an integer"),
        ("\u00b2", "must be an integer"),
        (" 7", "must be an integer"),
        ("1_0", "must be an integer"),
        ("\u0663", "must be an integer"),  # ARABIC-INDIC DIGIT THREE: int() would take it
    ],
)
def test_integer_parameters_at_their_bounds(value: str, message: str | None) -> None:
    params = {"by": "account", "window": "1h", "from": value}
    if message is None:
        assert parse_query(params).start_from is not None
    else:
        with pytest.raises(QueryError, match=f"from {message}"):
            parse_query(params)
