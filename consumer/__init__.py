"""The consumer group: closure metrics folded from conversation events, exactly once in effect."""
