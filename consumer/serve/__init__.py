"""Serving the metrics: the HTTP API, its queries, Prometheus, the dashboard's assets and
the `metrics` report. Reads the store's interface and the fold's model only."""
