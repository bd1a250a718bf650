"""The webhook gateway: conversation webhooks over HTTP in, Avro events out to Kafka.

Pure cores (`models`, `mapping`, `intake`, `signature`, `batch`) and thin shells
(`app`, `publisher`, `backfill`, `cli`). A webhook is answered 2xx only once Kafka
acknowledged its event (acks=all, idempotent producer).
"""

from producer.exceptions import GatewayError
from producer.intake import Ignored, Prepared, prepare
from producer.mapping import CONVERSATION_EVENTS, event_key, is_conversation_event, to_record
from producer.models import Webhook
from producer.signature import verify_signature

__all__ = [
    "CONVERSATION_EVENTS",
    "GatewayError",
    "Ignored",
    "Prepared",
    "Webhook",
    "event_key",
    "is_conversation_event",
    "prepare",
    "to_record",
    "verify_signature",
]
