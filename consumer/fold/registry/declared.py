"""Every metric, dimension and grouping convmetrics folds, declared once (`REGISTRY`), the
metric sets a deployment chooses from (`METRIC_SETS`) and their SLA bucket bounds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cache
from typing import Final

from consumer.fold.registry.model import (
    ACCOUNT,
    ACCOUNT_CHANNEL_TYPE,
    APP,
    CHANNEL_TYPE,
    FIRST_CLOSE,
    INBOX,
    TTFA,
    Dimension,
    Grouping,
    Kind,
    Metric,
    Registry,
    SlaBound,
)
from consumer.fold.sketch import LAG_BASE

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: `--sla-buckets`' default: time_to_close's bucket bounds in the full metric set
DEFAULT_SLA_BUCKETS: Final = "1h,4h,8h,24h"
#: the environment variable `--sla-buckets` defaults to (on consume, serve and metrics)
ENV_SLA_BUCKETS: Final = "CONVMETRICS_SLA_BUCKETS"
#: the longest bucket bound: ten years
MAX_SLA_SECONDS: Final = 3650 * 86400


def parse_sla_buckets(text: str) -> tuple[SlaBound, ...]:
    """`1h,4h,8h,24h` as bucket bounds (ValueError naming `--sla-buckets` and what is
    wrong): durations with a unit (s, m, h, d), ascending, at least one, at most 8, none
    longer than ten years (3650d)."""
    bounds: list[SlaBound] = []
    for part in text.split(","):
        label = part.strip()
        unit, digits = _UNITS.get(label[-1:]), label[:-1]
        if unit is None or not (digits.isascii() and digits.isdigit()) or not digits.strip("0"):
            raise ValueError(
                f"--sla-buckets: {label!r} is not a duration such as 90s, 30m, 4h or 1d "
                f"(give ascending bounds, comma-separated: {DEFAULT_SLA_BUCKETS})"
            )
        # the folds hold a duration in 64 bits; no SLA is longer (and a number of more digits
        # than ten years' seconds is not converted at all: Python refuses past 4,300)
        if len(digits.lstrip("0")) > 12 or int(digits) * unit > MAX_SLA_SECONDS:
            raise ValueError(f"--sla-buckets: {label!r} is longer than {MAX_SLA_SECONDS // 86400}d")
        seconds = int(digits) * unit
        if bounds and seconds <= bounds[-1][1]:
            raise ValueError(f"--sla-buckets: bounds must ascend, {label!r} is not above {bounds[-1][0]!r}")
        bounds.append((label, seconds))
    if len(bounds) > 8:
        raise ValueError(f"--sla-buckets: at most 8 bounds, not {len(bounds)}")
    return tuple(bounds)


#: the rows the groupings finer than an account, and the account's 1m, 1h and 1d rows, are
#: read from (`Grouping.derived_from`): (account, inbox, app, channel type), never served.
#: Its name is every one of its rows' `by`, and it holds most of a full-set store's rows: a
#: short one keeps them ~27% smaller (store format 2; docs/performance.md)
FINEST: Final = Grouping(
    "source", (ACCOUNT, INBOX, APP, CHANNEL_TYPE), formerly=("account,inbox,app,channel_type",)
)

REGISTRY: Final = Registry(
    metrics=(
        Metric(
            "closures",
            Kind.COUNTER,
            "1",
            "Conversations closed (distinct conversation.closed events).",
            counts=("conversation.closed",),
        ),
        Metric(
            "reopens",
            Kind.COUNTER,
            "1",
            "Conversations reopened (distinct conversation.opened events).",
            counts=("conversation.opened",),
        ),
        Metric(
            "closed_unread",
            Kind.COUNTER,
            "1",
            "Closures whose customer's last message was never read.",
            counts=("conversation.closed",),
            when="unread",
        ),
        Metric(
            "created",
            Kind.COUNTER,
            "1",
            "Conversations created (distinct conversation.created events).",
            counts=("conversation.created",),
        ),
        Metric(
            "assignments",
            Kind.COUNTER,
            "1",
            "Assignments (distinct conversation.assigned events).",
            counts=("conversation.assigned",),
        ),
        Metric(
            "snoozes",
            Kind.COUNTER,
            "1",
            "Snoozes (distinct conversation.snoozed events).",
            counts=("conversation.snoozed",),
        ),
        Metric(
            "closed_window_expired",
            Kind.COUNTER,
            "1",
            "Closures after the messaging window had expired (messageWindowExpiresAt before closedAt).",
            counts=("conversation.closed",),
            when="window_expired",
        ),
        Metric(
            "first_closes",
            Kind.COUNTER,
            "1",
            "Closures that are the earliest closure of their conversation (ties: the smaller event id).",
            rule=FIRST_CLOSE,
        ),
        Metric(
            "time_to_close",
            Kind.DISTRIBUTION,
            "s",
            "Seconds from the latest create or reopen to the close.",
            column="ttc",
            buckets=parse_sla_buckets(DEFAULT_SLA_BUCKETS),
        ),
        Metric(
            "time_to_first_assignment",
            Kind.DISTRIBUTION,
            "s",
            "Seconds from a conversation's earliest create to its earliest assignment at or after it.",
            column=TTFA,
            bin_base=2 * LAG_BASE,
        ),
        Metric(
            "ingest_lag",
            Kind.DISTRIBUTION,
            "ms",
            "Gateway receive time minus event time.",
            column="lag",
            groupings=(CHANNEL_TYPE,),
            windows=("1h", "1d", "all"),
            bin_base=LAG_BASE,
            scale=1000,
            exact_min=False,
            partial_size=3600,
        ),
    ),
    dimensions=(
        Dimension(CHANNEL_TYPE, str),
        Dimension(ACCOUNT, int),
        Dimension(INBOX, int, optional=True),
        Dimension(APP, int, optional=True),
    ),
    groupings=(
        Grouping(CHANNEL_TYPE, (CHANNEL_TYPE,)),
        # its all-time rows stored (a ranking of every account reads them, bench/query.py),
        # its 1m, 1h and 1d rows read from the source's as the three below: a commit wrote
        # about a row per event for each (docs/performance.md)
        Grouping(ACCOUNT, (ACCOUNT,), derived_from=FINEST.name, derived_windows=("1m", "1h", "1d")),
        # stored once, as the rows of their common source (`FINEST`): a commit writes one
        # row per (account, inbox, app, channel type) and window where it wrote one per
        # grouping, and a minute's row of these holds about one event (docs/performance.md)
        Grouping(ACCOUNT_CHANNEL_TYPE, (ACCOUNT, CHANNEL_TYPE), derived_from=FINEST.name),
        Grouping(INBOX, (ACCOUNT, INBOX), derived_from=FINEST.name),
        Grouping(APP, (APP,), derived_from=FINEST.name),
    ),
    sources=(FINEST,),
    closures_view=("closures", "reopens", "closed_unread", "time_to_close", "ingest_lag"),
    gauges=(
        Metric(
            "open",
            Kind.GAUGE,
            "1",
            "Conversations whose latest event (by event time, ties by the larger event id) is "
            "created, opened or assigned.",
            column="open_now",
        ),
        Metric(
            "unassigned",
            Kind.GAUGE,
            "1",
            "Open conversations that have no assigned event.",
            column="unassigned_now",
        ),
        Metric(
            "snoozed",
            Kind.GAUGE,
            "1",
            "Conversations whose latest event is snoozed.",
            column="snoozed_now",
        ),
    ),
)

#: the metrics and groupings of `/v1/closures`: what a deployment folds by default (time
#: to close without SLA buckets: they would cost the default set's store columns)
CLOSURES: Final = dataclasses.replace(
    REGISTRY,
    metrics=tuple(dataclasses.replace(m, buckets=()) for m in REGISTRY.view(REGISTRY.closures_view)),
    groupings=tuple(g for g in REGISTRY.groupings if g.name in (CHANNEL_TYPE, ACCOUNT)),
    gauges=(),
    # its folds keep no inbox or app: `account` is stored in every window, and its 1m, 1h
    # and 1d reads add the source's rows that `full` wrote into the same store
    folds_sources=False,
)
#: what a deployment may fold (`--metric-set`): `closures`, the default, or `full`, every
#: metric and grouping of `REGISTRY`: about 0.98 facts per event instead of 0.32, each
#: written to the rows of 3 stored groupings (docs/performance.md)
METRIC_SETS: Final[Mapping[str, Registry]] = {"closures": CLOSURES, "full": REGISTRY}
DEFAULT_METRIC_SET: Final = "closures"
#: the environment variable naming the metric set (`--metric-set`) of every command
ENV_METRIC_SET: Final = "CONVMETRICS_METRIC_SET"


def metric_set(name: str, sla_buckets: str | None = None) -> Registry:
    """The registry of a metric set by name (ValueError naming the known ones), its
    time-to-close buckets bounded by `sla_buckets` (`--sla-buckets`; None: the default)
    where the set has them."""
    try:
        registry = METRIC_SETS[name]
    except KeyError:
        raise ValueError(f"metric set must be one of {', '.join(METRIC_SETS)}, not {name!r}") from None
    if sla_buckets is None or sla_buckets == DEFAULT_SLA_BUCKETS:
        return registry
    bounds = parse_sla_buckets(sla_buckets)
    metrics = tuple(dataclasses.replace(m, buckets=bounds) if m.buckets else m for m in registry.metrics)
    return _with_metrics(registry, metrics)


@cache
def _with_metrics(registry: Registry, metrics: tuple[Metric, ...]) -> Registry:
    """One registry object per set of metrics: folds and stores cache by registry."""
    return dataclasses.replace(registry, metrics=metrics)
