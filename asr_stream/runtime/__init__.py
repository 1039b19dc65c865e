"""How model work runs: cross-stream batching of model calls, thread counts set once per process."""
