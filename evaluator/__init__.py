"""Evaluator: renders the scenarios and measures the output MP4s (decoded audio and frames), never the
internal signals that produced them. ``python -m evaluator run``; metric definitions in metrics/."""
