"""A real Apache Kafka broker for tests and demos, without a Docker engine.

``LocalBroker`` runs one KRaft node in a child JVM; ``kafka_bootstrap`` picks a configured
cluster, a testcontainers one, or a ``LocalBroker``, in that order.
"""

from convmetrics.localkafka.broker import LocalBroker
from convmetrics.localkafka.exceptions import (
    BrokerStartError,
    JavaNotFoundError,
    KafkaJarsError,
    LocalKafkaError,
)
from convmetrics.localkafka.jars import KAFKA_VERSION
from convmetrics.localkafka.provider import KafkaCluster, kafka_bootstrap

__all__ = [
    "KAFKA_VERSION",
    "BrokerStartError",
    "JavaNotFoundError",
    "KafkaCluster",
    "KafkaJarsError",
    "LocalBroker",
    "LocalKafkaError",
    "kafka_bootstrap",
]
