"""Which metric set a store's consumers fold. The first consumer notes it in `meta`; a
consumer of another set (or other SLA buckets) is refused at start (a ConfigError: exit
2), naming both, unless told to switch the store: two consumers of one group folding
different sets undercount every metric only one of them folds (a restart without
`--metric-set full` beside a full-set consumer), and nothing folds the missed events
again. Both stores run `check` in a transaction of their own."""

from __future__ import annotations

import logging

from consumer.exceptions import ConfigError
from consumer.fold.registry import Registry
from consumer.store.upgrade import Run

log = logging.getLogger(__name__)

META_NAME = "metric set"


def identity(name: str, registry: Registry) -> str:
    """A metric set as the store notes it: its name and any SLA bucket bounds (seconds)."""
    buckets = [
        f"{m.name} buckets {','.join(str(seconds) for _, seconds in m.buckets)} s"
        for m in registry.metrics
        if m.buckets
    ]
    return "; ".join([name, *buckets])


def check(run: Run, mark: str, folds: str, *, switch: bool, where: str) -> None:
    """Note `folds` (an `identity`) as the store's set, or refuse it (ConfigError) where the
    store notes another; `switch`: note it instead, saying so."""
    run(f"INSERT INTO meta VALUES ({mark}, {mark}) ON CONFLICT (name) DO NOTHING", (META_NAME, folds))
    (found,) = run(f"SELECT value FROM meta WHERE name = {mark}", (META_NAME,))[0]
    if found == folds:
        return
    if not switch:
        raise ConfigError(
            f"store {where} is folded with metric set {found!r}, and this consumer folds {folds!r}: "
            "consumers of one store that fold different sets undercount what only one of them "
            "folds; run it with the store's --metric-set and --sla-buckets, or pass "
            "--switch-metric-set once every consumer of the group runs the new set"
        )
    run(f"UPDATE meta SET value = {mark} WHERE name = {mark}", (folds, META_NAME))
    log.warning(
        "store %s switched from metric set %r to %r: what is folded from now on counts in the new one",
        where,
        found,
        folds,
    )
