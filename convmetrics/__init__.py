"""convmetrics: real-time closure metrics for team-inbox conversations, on Kafka."""

__version__ = "0.1.0"
