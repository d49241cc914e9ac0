"""Evaluator: renders the scenarios and measures the output MP4s (audio and frames), never the
internal signals that produced them. ``python -m evaluator run``; metrics are defined in metrics.py."""
