"""The capability logic every front-end shares: sets, changes, reasons, workloads and least-privilege profiles."""
