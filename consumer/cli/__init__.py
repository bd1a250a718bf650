"""`convmetrics consume`, `convmetrics serve`, `convmetrics token` and `convmetrics dlq replay`:
their flags (`parsers`) and what each does (`commands`)."""

from consumer.cli.commands import STOP_DEADLINE_S, consumer_settings
from consumer.cli.parsers import register

__all__ = ["STOP_DEADLINE_S", "consumer_settings", "register"]
