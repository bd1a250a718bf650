"""The Kafka shell: the consumer loop, its commit pipeline, dead letters and replay, and
the metrics topic. Reads and writes through the store's interface; folds with `fold`."""
