"""The least-privilege front-ends: run (one command, traced here, proved by re-running) and recommend (a workload, from Prometheus)."""
