"""Evaluation harness (`asr-stream eval`): manifests, noise conditions, metrics, reports."""
