"""The streaming Silero segmenter on real speech: utterances found, independent of block size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.speech import UTTERANCES, read_wav_16k
from worker.vad import SAMPLE_RATE, SileroVad, SpeechSegmenter, VadParams


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def _segments(vad: SileroVad, audio: np.ndarray, block: int, **params) -> list[tuple[int, int]]:
    segmenter = SpeechSegmenter(vad, VadParams(**params))
    found = []
    for start in range(0, len(audio), block):
        found += segmenter.feed(audio[start : start + block])
    found += segmenter.finish()
    for seg in found:
        assert len(seg.audio) == seg.end - seg.start
        np.testing.assert_array_equal(seg.audio, audio[seg.start : seg.end])
    return [(s.start, s.end) for s in found]


def test_finds_each_utterance_between_pauses(vad: SileroVad, three_utterances_wav: Path) -> None:
    audio = read_wav_16k(three_utterances_wav)
    segments = _segments(vad, audio, 4096)
    assert len(segments) == len(UTTERANCES)
    # Leading 0.5 s of silence; 0.9 s pauses between; segments are in order and do not overlap.
    assert segments[0][0] >= 0.3 * SAMPLE_RATE
    for (_, end), (start, _) in zip(segments, segments[1:]):
        assert start - end >= 0.5 * SAMPLE_RATE


@pytest.mark.parametrize("block", [160, 512, 1000, 48_000])
def test_block_size_does_not_change_the_segments(vad: SileroVad, three_utterances_wav: Path, block: int) -> None:
    audio = read_wav_16k(three_utterances_wav)
    assert _segments(vad, audio, block) == _segments(vad, audio, len(audio))


def test_silence_and_dc_offset_have_no_speech(vad: SileroVad) -> None:
    assert _segments(vad, np.zeros(3 * SAMPLE_RATE, np.float32), 4096) == []
    assert _segments(vad, np.full(3 * SAMPLE_RATE, 0.3, np.float32), 4096) == []


def test_long_speech_is_cut_at_the_max_segment_length(vad: SileroVad, three_utterances_wav: Path) -> None:
    audio = read_wav_16k(three_utterances_wav)
    segments = _segments(vad, audio, 4096, min_silence_ms=5000, max_segment_s=2.0)
    assert all(end - start <= 2.0 * SAMPLE_RATE + 2 * 480 for start, end in segments)
    assert len(segments) > len(UTTERANCES)
