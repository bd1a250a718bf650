"""Seeded synthetic conversation webhooks, shaped exactly like the platform's JSON.

The generator is a small discrete-event simulation: conversations start at evenly spread
times over ``[start, start + span)``; each active conversation sits in one heap entry keyed
by the time of its next lifecycle step (created -> assigned* -> snoozed? -> closed ->
maybe opened -> ... -> closed). Late deliveries and redeliveries wait in the same heap as
ready-made dicts. Memory is therefore bounded by the number of *concurrently active*
conversations, never by the total; the same seed always gives the same stream.

Yielded dicts share nested read-only parts (``participants``) between events of one
conversation: copy before mutating.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

#: Default ``start``: a fixed epoch (2023-11-14T22:13:20Z) so that output is reproducible.
DEFAULT_START = 1_700_000_000

#: Channel types EVENTS.md lists, with a rough popularity weight.
KNOWN_CHANNEL_TYPES: dict[str, int] = {
    "CLOUD_WABA": 30, "TWILIO_WABA": 12, "DIALOG_WABA": 8, "MESSAGEBIRD_WABA": 6,
    "TELNYX_WABA": 3, "CM_WABA": 3, "SANDBOX_WABA": 1, "TELEGRAM": 12, "TWILIO_SMS": 6,
    "LINE": 5, "VIBER": 4, "GBM": 3, "ABM": 2, "VBM": 1, "VKONTAKTE": 2, "BALOOZA": 2,
}  # fmt: skip
#: Channel types outside the known list ("new values appear over time").
UNKNOWN_CHANNEL_TYPES: tuple[str, ...] = ("WECHAT", "NEW_CHANNEL_X", "INSTAGRAM_DM", "KAKAOTALK")
#: Non-conversation events the platform also sends (the consumer must ignore them).
NOISE_EVENTS: tuple[str, ...] = (
    "message.created", "message.created", "message.created", "message.updated",
    "conversation_tag.created", "mention.created", "channel_user.created",
)  # fmt: skip
#: The data field carrying each conversation event's own time.
TIME_FIELD = {
    "created": "createdAt", "opened": "openedAt", "closed": "closedAt",
    "assigned": "assignedAt", "snoozed": "snoozedAt",
}  # fmt: skip
_STATE = {
    "created": "OPENED", "opened": "OPENED", "assigned": "OPENED",
    "snoozed": "SNOOZED", "closed": "CLOSED",
}  # fmt: skip
_FIRST = ("Ahmed", "Sara", "Li", "Maria", "John", "Fatima", "Omar", "Yuki", "Ana", "Ivan")
_LAST = ("Abbas", "Smith", "Garcia", "Chen", "Khan", "Silva", "Novak", "Sato", "Haddad")

# Lifecycle probabilities (per cycle). _expected_events() mirrors them.
_P_SNOOZE = 0.15
_P_CLOSE_FIRST = 0.95
_P_CLOSE_AGAIN = 0.9
_P_REOPEN = 0.2  # divided by the number of reopens so far + 1
#: a first assignment stamped before its conversation's creation (routed ahead of it)
_P_EARLY_ASSIGN = 0.03
# Lognormal delays: (median seconds, sigma). Long tails: minutes to days.
_D_ASSIGN = (120.0, 1.2)
_D_NEXT_ASSIGN = (1_800.0, 1.5)
_D_SNOOZE_FOR = (10_800.0, 1.0)
_D_CLOSE = (2_700.0, 1.8)
_D_REOPEN = (21_600.0, 1.5)
_D_LATE = (900.0, 1.5)
_D_LATE_CLOSE = (21_600.0, 1.2)
_MAX_DELAY = 30 * 86_400
_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID_SET = (0x4 << 76) | (0x2 << 62)
_MIN_STEP = 5  # seconds between steps of one conversation (> envelope lag, keeps order) ...
# ... except an assignment or a closure in the same second as the step before it, now and then
# (same_second_rate): the boundary of "the latest start at or before closedAt"


class GenerateConfigError(ValueError):
    """A generator setting is out of range; the message names the setting (`field`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateConfig:
    """What to generate. Rates are probabilities in ``[0, 1)``.

    Attributes:
        seed: RNG seed; the same config always yields the same stream.
        events: approximate total number of lines (noise and redeliveries included).
        accounts: number of account ids (1..accounts), skewed: low ids are busier.
        conversations: upper bound on distinct conversations (fewer when ``events`` is small).
        start: unix seconds where conversations start.
        span: seconds over which conversations start; steps past ``start + span`` are cut
            (the conversation stays as it was), late deliveries may still arrive after it.
        duplicate_rate: chance that a delivery is followed by a redelivery (same ``id``,
            ``deliveryAttempts`` + 1, later in the stream); redeliveries can repeat.
        late_rate: chance that a conversation event is delivered late (minutes to days,
            so e.g. a ``closed`` may come before its ``created``).
        unknown_channel_rate: share of conversations on a channel type EVENTS.md does not list.
        noise_rate: approximate share of non-conversation events among original deliveries.
        alt_time_field_rate: share of envelopes naming their time ``<verb>_at``
            (``closed_at``, ``assigned_at``, ...) instead of ``createdAt``.
        missing_time_rate: share of conversation events without their ``data.<verb>At``
            (consumers must then fall back to the envelope time).
        same_second_rate: chance that an assignment or a closure comes in the same second
            as the conversation's step before it (its creation, reopening or assignment).
    """

    seed: int = 0
    events: int = 10_000
    accounts: int = 50
    conversations: int = 2_000
    start: int = DEFAULT_START
    span: int = 7 * 86_400
    duplicate_rate: float = 0.02
    late_rate: float = 0.02
    unknown_channel_rate: float = 0.01
    noise_rate: float = 0.05
    alt_time_field_rate: float = 0.1
    missing_time_rate: float = 0.0
    same_second_rate: float = 0.02

    def __post_init__(self) -> None:
        for name in ("events", "accounts", "conversations", "span"):
            if getattr(self, name) < 1:
                raise GenerateConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.start < 0:
            raise GenerateConfigError("start", f"must be unix seconds >= 0, got {self.start}")
        for name in ("duplicate_rate", "late_rate", "noise_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise GenerateConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        for name in ("unknown_channel_rate", "alt_time_field_rate", "missing_time_rate", "same_second_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise GenerateConfigError(name, f"must be in [0, 1], got {getattr(self, name)}")


def _expected_events(mean_assigns: float) -> float:
    """Expected conversation events of one lifecycle (before cuts at the span's end)."""
    total = 1 + mean_assigns + _P_SNOOZE + _P_CLOSE_FIRST
    reach = _P_CLOSE_FIRST
    for reopens in range(1, 20):
        reach *= _P_REOPEN / reopens
        total += reach * (1 + mean_assigns / 2 + _P_CLOSE_AGAIN)
        reach *= _P_CLOSE_AGAIN
    return total


#: assignments per first cycle at least (a reopened cycle has half as many): every stream
#: has conversations assigned once, several times and never
_MIN_ASSIGNS = 0.6


def plan(config: GenerateConfig) -> tuple[int, float]:
    """Number of conversations to start and mean assignments per cycle to hit ``events``."""
    originals = config.events * (1 - config.noise_rate) * (1 - config.duplicate_rate)
    base = _expected_events(_MIN_ASSIGNS)
    if originals <= config.conversations * base:
        return max(1, round(originals / base)), _MIN_ASSIGNS
    slope = _expected_events(_MIN_ASSIGNS + 1.0) - base
    mean_assigns = min(50.0, _MIN_ASSIGNS + (originals / config.conversations - base) / slope)
    return config.conversations, mean_assigns


class _Conversation:
    __slots__ = (
        "account", "agent", "assigns_left", "backdate", "channel_id", "channel_type", "customer", "id",
        "last_inbound", "last_read", "participants", "reopens", "snooze_pending",
        "snoozed_until", "t", "verb",
    )  # fmt: skip

    def __init__(self, cid: int, account: int, channel_type: str, channel_id: int) -> None:
        self.id = cid
        self.account = account
        self.channel_type = channel_type
        self.channel_id = channel_id
        self.customer: dict[str, Any] = {}
        self.participants: list[dict[str, Any]] = []
        self.agent: int | None = None
        self.t = 0
        self.verb = "created"
        self.assigns_left = 0
        self.snooze_pending = False
        self.reopens = 0
        self.last_inbound: int | None = None
        self.last_read: int | None = None
        self.snoozed_until: int | None = None
        #: seconds the next event's own time lies before the conversation's clock (an
        #: assignment routed before the conversation was created)
        self.backdate = 0


def generate_webhooks(config: GenerateConfig) -> Iterator[dict[str, Any]]:
    """Yield webhook payloads (the platform's JSON as dicts) in delivery order."""
    return _Simulation(config).run()


def generate_ndjson(config: GenerateConfig) -> Iterator[bytes]:
    """Yield the same stream as :func:`generate_webhooks`, one NDJSON line per item."""
    dumps = orjson.dumps
    for event in generate_webhooks(config):
        yield dumps(event) + b"\n"


class _Simulation:
    def __init__(self, config: GenerateConfig) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.n_conversations, self.mean_assigns = plan(config)
        self.p_assign = self.mean_assigns / (1 + self.mean_assigns)
        self.p_noise = config.noise_rate / (1 - config.noise_rate)
        self.end = config.start + config.span
        self.heap: list[tuple[int, int, Any]] = []
        self.out: list[dict[str, Any]] = []
        self.seq = 0
        self.channels = list(KNOWN_CHANNEL_TYPES)
        weights = list(KNOWN_CHANNEL_TYPES.values())
        self.cum_weights = [sum(weights[: i + 1]) for i in range(len(weights))]

    # -- scheduling ------------------------------------------------------------------------
    def push(self, at: int, item: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, item))

    def delay(self, median_sigma: tuple[float, float]) -> int:
        median, sigma = median_sigma
        value = self.rng.lognormvariate(math.log(median), sigma)
        return max(_MIN_STEP, min(_MAX_DELAY, int(value)))

    def step(self, median_sigma: tuple[float, float]) -> int:
        """The delay of an assignment or closure: now and then none at all."""
        if self.rng.random() < self.c.same_second_rate:
            return 0
        return self.delay(median_sigma)

    def run(self) -> Iterator[dict[str, Any]]:
        c, n, heap, out, pop = self.c, self.n_conversations, self.heap, self.out, self.pop
        for i in range(n):
            t0 = c.start + (c.span * i + int(self.rng.random() * c.span)) // n
            while heap and heap[0][0] <= t0:
                pop()
                yield from out
                out.clear()
            self.push(t0, self.new_conversation(i, t0))
        while heap:
            pop()
            yield from out
            out.clear()

    def pop(self) -> None:
        """Take the heap's earliest item; what is due now goes to ``self.out``."""
        at, _, item = heapq.heappop(self.heap)
        if isinstance(item, dict):
            self.deliver(at, item)
            return
        conv: _Conversation = item
        event = self.conversation_event(conv)
        if self.rng.random() < self.c.late_rate:
            # a late closure waits longer (hours): it may arrive after the conversation's next
            # closure, an earlier first close delivered late
            self.push(at + self.delay(_D_LATE_CLOSE if conv.verb == "closed" else _D_LATE), event)
        else:
            self.deliver(at, event)
        if self.rng.random() < self.p_noise:
            self.deliver(at, self.noise_event(conv))
        if self.advance(conv):
            self.push(conv.t, conv)

    def deliver(self, at: int, event: dict[str, Any]) -> None:
        if self.rng.random() < self.c.duplicate_rate:
            again: dict[str, Any] = orjson.loads(orjson.dumps(event))
            attempts = again["deliveryAttempts"]
            again["deliveryAttempts"] = attempts + 1
            backoff = int(30 * 4 ** min(attempts, 6) * (1 + self.rng.random()))
            self.push(at + backoff, again)
        self.out.append(event)

    # -- lifecycle ---------------------------------------------------------------------------
    def new_conversation(self, i: int, t0: int) -> _Conversation:
        rng, c = self.rng, self.c
        account = 1 + int(c.accounts * rng.random() ** 2)
        if rng.random() < c.unknown_channel_rate:
            channel_type = rng.choice(UNKNOWN_CHANNEL_TYPES)
            channel_no = len(self.channels) + UNKNOWN_CHANNEL_TYPES.index(channel_type)
        else:
            channel_type = rng.choices(self.channels, cum_weights=self.cum_weights)[0]
            channel_no = self.channels.index(channel_type)
        conv = _Conversation(i + 1, account, channel_type, account * 100 + channel_no)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        conv.customer = {
            "user": {
                "id": 1_000_000 + i, "__typename": "ChannelUser", "name": None,
                "firstName": first, "lastName": last,
                "identifiers": [
                    {"sourceId": str(rng.randrange(10**9, 10**10)),
                     "category": _identifier_category(channel_type)}
                ],
                "displayName": f"{first} {last}", "avatarUrl": None, "optimisedAvatarUrl": None,
            }
        }  # fmt: skip
        conv.participants = [conv.customer]
        conv.t = t0
        conv.last_inbound = t0 if rng.random() < 0.93 else None  # else agent-initiated
        self.start_cycle(conv, first_cycle=True)
        return conv

    def start_cycle(self, conv: _Conversation, *, first_cycle: bool) -> None:
        p = self.p_assign if first_cycle else self.p_assign / (2 - self.p_assign)  # mean a/2
        assigns = 0
        while self.rng.random() < p:
            assigns += 1
        conv.assigns_left = assigns
        conv.snooze_pending = first_cycle and self.rng.random() < _P_SNOOZE

    def advance(self, conv: _Conversation) -> bool:
        """Pick the conversation's next step; False when it has none inside the span."""
        rng, prev = self.rng, conv.t
        if conv.verb == "snoozed":
            prev = conv.snoozed_until or prev
            conv.snoozed_until = None
        if conv.verb == "closed":
            if rng.random() >= _P_REOPEN / (conv.reopens + 1):
                return False
            conv.reopens += 1
            conv.verb, conv.t = "opened", prev + self.delay(_D_REOPEN)
            if rng.random() < 0.7:  # reopened by a customer message, else by an agent
                conv.last_inbound = conv.t
            self.start_cycle(conv, first_cycle=False)
        elif conv.assigns_left > 0:
            conv.assigns_left -= 1
            first = conv.agent is None
            conv.verb, conv.t = "assigned", prev + self.step(_D_ASSIGN if first else _D_NEXT_ASSIGN)
            if first and conv.reopens == 0 and rng.random() < _P_EARLY_ASSIGN:
                # stamped before the creation: time to first assignment skips it
                conv.backdate = conv.t - prev + self.delay(_D_ASSIGN)
            conv.agent = conv.account * 1000 + rng.randrange(1, 20)
            agent = {"id": conv.agent, "__typename": "AppUser", "fullName": None,
                     "displayName": None, "optimisedAvatarUrl": None}  # fmt: skip
            conv.participants = [conv.customer, {"user": agent}]
            self.customer_writes(conv, prev)
            if rng.random() < 0.8:
                conv.last_read = conv.t
        elif conv.snooze_pending:
            conv.snooze_pending = False
            conv.verb, conv.t = "snoozed", prev + self.delay(_D_ASSIGN)
            conv.snoozed_until = conv.t + self.delay(_D_SNOOZE_FOR)
            if rng.random() < 0.9:
                conv.last_read = conv.t
        else:
            p_close = _P_CLOSE_FIRST if conv.reopens == 0 else _P_CLOSE_AGAIN
            if rng.random() >= p_close:
                return False
            conv.verb, conv.t = "closed", prev + self.step(_D_CLOSE)
            self.customer_writes(conv, prev)
            if rng.random() < 0.85:  # the agent read everything before closing
                conv.last_read = conv.t
        return conv.t < self.end

    def customer_writes(self, conv: _Conversation, since: int) -> None:
        if self.rng.random() < 0.4:
            conv.last_inbound = since + int(self.rng.random() * (conv.t - since))

    # -- payloads ----------------------------------------------------------------------------
    def envelope(self, event: str, account: int, t: int, verb: str) -> dict[str, Any]:
        rng = self.rng
        sent = t + int(rng.random() * 3)
        time_key = f"{verb}_at" if rng.random() < self.c.alt_time_field_rate else "createdAt"
        return {
            "event": event, "id": _uuid4(rng.getrandbits(128)),
            "account": account, "app": 10_000 + account, time_key: sent,
            "deliveryAttempts": 1, "firstDeliveryAttempt": sent,
        }  # fmt: skip

    def conversation_event(self, conv: _Conversation) -> dict[str, Any]:
        verb, t = conv.verb, conv.t - conv.backdate
        conv.backdate = 0
        envelope = self.envelope("conversation." + verb, conv.account, t, verb)
        inbound = conv.last_inbound
        waba = conv.channel_type.endswith("WABA") and inbound is not None
        data: dict[str, Any] = {
            "id": conv.id,
            "snoozedUntil": conv.snoozed_until,
            "messageWindowExpiresAt": inbound + 86_400 if waba and inbound else None,
            "messageWindowExpiryConditions": [],
            "channelType": conv.channel_type,
            "state": _STATE[verb],
            "lastReadByAppUserAt": conv.last_read,
            "lastInboundMessageAt": inbound,
        }
        if not (self.c.missing_time_rate and self.rng.random() < self.c.missing_time_rate):
            data[TIME_FIELD[verb]] = t
        data["channel"] = {"id": conv.channel_id}
        data["participants"] = conv.participants
        envelope["data"] = data
        return envelope

    def noise_event(self, conv: _Conversation) -> dict[str, Any]:
        rng = self.rng
        name = rng.choice(NOISE_EVENTS)
        envelope = self.envelope(name, conv.account, conv.t, name.split(".")[1])
        object_id = rng.randrange(1, 10**9)
        data: dict[str, Any]
        if name.startswith("message."):
            data = {"id": object_id, "conversationId": conv.id, "text": "ok, thanks",
                    "direction": rng.choice(("INBOUND", "OUTBOUND")), "createdAt": conv.t}  # fmt: skip
        elif name == "conversation_tag.created":
            data = {"id": object_id, "name": rng.choice(("vip", "refund", "lead")), "color": "#f80"}
        elif name == "mention.created":
            data = {"id": object_id, "messageId": rng.randrange(1, 10**9), "userId": conv.agent}
        else:
            data = dict(conv.customer["user"])
        envelope["data"] = data
        return envelope


def _uuid4(bits: int) -> str:
    """A version-4 UUID string from 128 random bits (``uuid.UUID`` is 3x slower)."""
    h = "%032x" % (bits & _UUID_CLEAR | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _identifier_category(channel_type: str) -> str:
    if channel_type.endswith("WABA") or channel_type == "TWILIO_SMS":
        return "PHONE_NUMBER"
    if channel_type in KNOWN_CHANNEL_TYPES:
        return f"{channel_type}_ID"
    return "EXTERNAL_ID"
