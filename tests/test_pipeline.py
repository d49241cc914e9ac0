from realtime_avatar.pipeline import MediaPart, SpokenSegment, extend_segments


def _part(text: str, language: str, start_s: float, seconds: float) -> MediaPart:
    return MediaPart(b"", text, language, start_s, seconds, 0, 0)


def test_segments_span_every_chunk_of_their_clauses():
    durations = [("Hello there.", "en", 1.0), ("", "", 0.5), ("你好。", "zh", 0.8), ("欢迎。", "zh", 0.7),
                 ("Hola.", "es", 1.0), ("", "", 0.0)]
    segments: list[SpokenSegment] = []
    position = 0.0
    for text, language, seconds in durations:
        segments = extend_segments(segments, _part(text, language, position, seconds))
        position += seconds
    assert segments == [
        SpokenSegment("en", "Hello there.", 0.0, 1.5),
        SpokenSegment("zh", "你好。欢迎。", 1.5, 3.0),
        SpokenSegment("es", "Hola.", 3.0, 4.0),
    ]
