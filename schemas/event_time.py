"""How far ahead of a clock an event's time may be: the gateway refuses later ones (422
naming the field) and the consumer dead-letters those that reach the topic another way.
A sender's clock a few minutes or hours off passes; one dated years ahead would move the
consumer's watermark, which retention purges and idle conversations expire by."""

from __future__ import annotations

from typing import Final

#: seconds an event time may be after the receiving process's clock
MAX_AHEAD_S: Final = 86_400
#: the same, as the errors say it
MAX_AHEAD_TEXT: Final = "1 day"
