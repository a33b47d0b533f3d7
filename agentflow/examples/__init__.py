"""Runnable examples (``python -m agentflow.examples.pipeline``)."""
