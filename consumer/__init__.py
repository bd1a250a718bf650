"""The consumer group: conversation metrics folded from conversation events, exactly once in effect."""
