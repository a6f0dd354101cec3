"""The serve front-end: the Prometheus collector, the exposition and the hardened HTTP server."""
