"""Other systems' protocols: OTLP and Loki ingest, a Loki-compatible read subset.

Pure converters: no I/O, no clock (the HTTP handlers in ``service/`` call them)."""
