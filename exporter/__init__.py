"""capability-exporter: Linux capability checks and denials, counted with eBPF, served to Prometheus."""

__version__ = "0.1.0"
