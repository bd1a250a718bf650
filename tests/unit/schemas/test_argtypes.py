"""The shared argparse types at their boundaries."""

import argparse

import pytest

from schemas import argtypes


@pytest.mark.parametrize(
    "text",
    ["kafka:9092", "kafka", "a:1,b:65535", " a:1 , b:2 ", "SASL_SSL://k:9093", "[::1]:9092", "[::1]"],
)
def test_bootstrap_servers_taken(text: str) -> None:
    assert argtypes.bootstrap_servers(text) == text.strip()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("kafka:9o92", "must be host:port"),
        ("kafka:", "must be host:port"),
        (":9092", "must be host:port"),
        ("a:1,,b:2", "must be host:port"),
        ("", "must be host:port"),
        ("[::1]x", "must be host:port"),
        ("k:\u00b2", "must be host:port"),  # a digit to str.isdigit, not to librdkafka
        ("kafka:0", "must name ports from 1 to 65535"),
        ("a:1,kafka:65536", "must name ports from 1 to 65535, got 'a:1,kafka:65536' (at 'kafka:65536')"),
    ],
)
def test_bootstrap_servers_refused(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{says}".replace("(", r"\(").replace(")", r"\)")):
        argtypes.bootstrap_servers(text)


@pytest.mark.parametrize("text", ["", " ", "\t"])
def test_a_blank_name_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be a consumer group id"):
        argtypes.non_blank("consumer group id")(text)
    assert argtypes.non_blank("consumer group id")(" g ") == " g "
