"""Model stages of the avatar pipeline: plain Python, no Ray.

Each subpackage is usable on its own (from a CLI, a test or a Serve deployment).
"""
