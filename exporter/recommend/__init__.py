"""The run front-end: trace one command, recommend the least capabilities it needs, and prove them by re-running."""
