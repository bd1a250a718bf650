"""Time to first assignment, as the reference fold (`consumer.fold.reference`) counts it.

The counted first assignment of a conversation is its earliest assignment (time, then event
id) at or after its created time (`consumer.fold.state.first_assignment`); its duration
counts in the window of the assignment. When a late created or assigned event changes which
assignment that is, or its duration, the old one is retracted (a fact of -1) and the new one
counted, and the store's `first_assignments` row of the conversation is replaced.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from consumer.fold.delta import A_APP, A_CHANNEL, A_INBOX, A_TIME, ASSIGNS, CREATED_AT, Conversation, Delta
from consumer.fold.facts import Dims, FactMaker
from consumer.fold.model import Event
from consumer.fold.state import by_time_and_id, first_assignment


class FirstAssignments:
    """The rules of one partition's fold (`facts`: its fact layout, with `ttfa` set); each
    call adds its facts and rows to the `delta` it is given (the fold's pending one)."""

    def __init__(self, facts: FactMaker, partition: int) -> None:
        self.facts = facts
        self.partition = partition

    def assigned(
        self,
        delta: Delta,
        e: Event,
        conv: Conversation,
        fact: list[Any] | None,
        inbox: int | None,
        app: int | None,
    ) -> None:
        """An assignment arrived: it may be the conversation's first (time to first assignment)."""
        old = first_assignment(conv)
        mine = [e.time, e.event_id, e.channel_type, inbox, app]
        insort(conv[ASSIGNS], mine, key=by_time_and_id)
        new = first_assignment(conv)
        if new is mine:
            ttfa = e.time - conv[CREATED_AT]
            assert self.facts.ttfa is not None
            fact = self.facts.with_value(
                self.facts.ttfa, fact, (e.channel_type, e.account, inbox, app), e.time, 1, ttfa
            )
            delta.facts.append(tuple(fact))
            if old is not None:
                self._retract(delta, e.account, old, conv[CREATED_AT])
            self._counted(delta, e.account, e.conversation, conv, new)
            return
        if fact is not None:
            delta.facts.append(tuple(fact))
        if new is not None and by_time_and_id(mine) >= by_time_and_id(new):
            # after the counted one (or its equal: a redelivery the dedupe memory had
            # forgotten, kept after it by insort): it can never count
            conv[ASSIGNS].remove(mine)

    def created(self, delta: Delta, e: Event, conv: Conversation) -> None:
        """A created event arrived: the conversation's created time may move earlier, and
        its first assignment (or its duration) with it."""
        was = conv[CREATED_AT]
        if was is not None and was <= e.time:
            return
        old = first_assignment(conv)
        conv[CREATED_AT] = e.time
        new = first_assignment(conv)
        if new is None:
            return
        if old is not None:
            self._retract(delta, e.account, old, was)
        facts = self.facts
        assert facts.ttfa is not None
        dims: Dims = (new[A_CHANNEL], e.account, new[A_INBOX], new[A_APP])
        fact = facts.with_value(facts.ttfa, None, dims, new[A_TIME], 1, new[A_TIME] - e.time)
        delta.facts.append(tuple(fact))
        self._counted(delta, e.account, e.conversation, conv, new)

    def _retract(self, delta: Delta, account: int, old: list[Any], created: int) -> None:
        facts = self.facts
        assert facts.ttfa is not None
        dims: Dims = (old[A_CHANNEL], account, old[A_INBOX], old[A_APP])
        fact = tuple(facts.with_value(facts.ttfa, None, dims, old[A_TIME], -1, old[A_TIME] - created))
        delta.facts.append(fact)
        delta.retractions.append(fact)

    def _counted(
        self, delta: Delta, account: int, conversation: int, conv: Conversation, new: list[Any]
    ) -> None:
        """Record the counted first assignment (the store's first_assignments row) and forget
        the assignments after it (none of them can become the first)."""
        assigns = conv[ASSIGNS]
        del assigns[assigns.index(new) + 1 :]
        delta.first_assignments[(account, conversation)] = (
            account, conversation, self.partition, new[A_CHANNEL], new[A_INBOX], new[A_APP],
            new[A_TIME], new[A_TIME] - conv[CREATED_AT],
        )  # fmt: skip
