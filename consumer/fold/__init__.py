"""The pure core: conversation events in, metric facts out. No I/O, no clock.

`reference` is the fold in Python (the one to read; `state` is a conversation's state in
it, `batch` a consumed batch folded into either fold), `native` chooses between it and the
compiled twin (`consumer/native`, Rust), `delta` is what a fold hands to the store, and
`model`, `windows` and `sketch` are the event, the windows and the distributions. This
package imports nothing else of the consumer but its errors.
"""

from consumer.fold.batch import BatchResult, Fold, apply_batch
from consumer.fold.delta import (
    BY_ACCOUNT,
    BY_CHANNEL,
    CHUNK,
    Changes,
    ClosureRow,
    ConvKey,
    Delta,
    Fact,
    conv_key,
    decode_snapshot,
    mem_key,
    row_keys,
)
from consumer.fold.reference import PartitionFold
from consumer.fold.state import last_time_of

__all__ = [
    "BY_ACCOUNT",
    "BY_CHANNEL",
    "CHUNK",
    "BatchResult",
    "Changes",
    "ClosureRow",
    "ConvKey",
    "Delta",
    "Fact",
    "Fold",
    "PartitionFold",
    "apply_batch",
    "conv_key",
    "decode_snapshot",
    "last_time_of",
    "mem_key",
    "row_keys",
]
