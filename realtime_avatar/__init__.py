"""Realtime Avatar: configuration, the chunked render pipeline and the ``avatar`` CLI."""
