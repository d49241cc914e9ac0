import numpy as np

from realtime_avatar.pipeline import RenderedChunk, SpokenSegment, _extend_segments

SR = 24_000


def _chunk(text: str, language: str, seconds: float) -> RenderedChunk:
    frames = np.zeros((0, 8, 8, 3), np.uint8)
    return RenderedChunk(0, text, language, np.zeros(int(seconds * SR), np.float32), SR, frames)


def test_segments_span_every_chunk_of_their_clauses():
    chunks = [_chunk("Hello there.", "en", 1.0), _chunk("", "", 0.5), _chunk("你好。", "zh", 0.8),
              _chunk("欢迎。", "zh", 0.7), _chunk("Hola.", "es", 1.0), _chunk("", "", 0.0)]
    segments: list[SpokenSegment] = []
    position = 0.0
    for chunk in chunks:
        segments = _extend_segments(segments, chunk, position)
        position += chunk.audio_seconds
    assert segments == [
        SpokenSegment("en", "Hello there.", 0.0, 1.5),
        SpokenSegment("zh", "你好。欢迎。", 1.5, 3.0),
        SpokenSegment("es", "Hola.", 3.0, 4.0),
    ]
