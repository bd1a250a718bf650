"""convmetrics: real-time conversation metrics for team inboxes, on Kafka."""

__version__ = "0.1.0"
