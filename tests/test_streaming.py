"""Streamed chunk input, processed incrementally: real espeak speech, real PCM and webm/opus chunks.

Timing is measured in bench/streaming.py; these tests check behaviour: utterances come out
before the chunk list is consumed, in time order, with the right words.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.speech import FOUR_UTTERANCES, byte_chunks, pcm_chunks, read_wav_16k, transcode
from tests.speech import word_error_rate

EXPECTED = " ".join(FOUR_UTTERANCES)


@pytest.fixture(scope="session")
def four_utterances_webm(four_utterances_wav: Path, speech_dir: Path) -> bytes:
    return transcode(four_utterances_wav, speech_dir, "webm-opus").read_bytes()


def _check_segments(result: dict) -> None:
    assert len(result["segments"]) == len(FOUR_UTTERANCES), result["segments"]
    starts = [s["start"] for s in result["segments"]]
    assert starts == sorted(starts)
    for segment, expected in zip(result["segments"], FOUR_UTTERANCES):
        assert word_error_rate(expected, segment["text"]) <= 0.25, segment
    assert word_error_rate(EXPECTED, result["transcript"]) <= 0.15


@pytest.mark.parametrize(("encoding", "rate", "channels", "chunk_ms"), [
    ("pcm_s16le", 16_000, 1, 20),
    ("pcm_s16le", 16_000, 1, 100),
    ("f32le", 48_000, 2, 50),
])
def test_pcm_chunks(run_job, four_utterances_wav: Path, encoding: str, rate: int, channels: int, chunk_ms: int) -> None:
    chunks = pcm_chunks(read_wav_16k(four_utterances_wav), chunk_ms, encoding, rate, channels)
    events = run_job({"chunks": chunks, "task": "transcribe",
                      "chunk_format": {"encoding": encoding, "sample_rate": rate, "channels": channels}})
    result = events[-1]
    assert result["type"] == "result", result
    _check_segments(result)
    if (encoding, rate, channels) == ("pcm_s16le", 16_000, 1):
        # The same samples as the file: streaming them in chunks must give exactly the file's result.
        whole = run_job({"audio_path": str(four_utterances_wav), "task": "transcribe"})[-1]
        assert result["segments"] == whole["segments"]
    info = result["metadata"]["chunks"]
    assert info["count"] == len(chunks)
    # The first utterance was transcribed and yielded while most chunks were still unread.
    assert info["consumed_at_first_segment"] < len(chunks) / 2
    for timing in result["metadata"]["segment_timings"]:
        assert timing["emit_delay_ms"] >= timing["asr_ms"] > 0


def test_webm_opus_chunks_decode_incrementally(run_job, four_utterances_webm: bytes) -> None:
    chunks = byte_chunks(four_utterances_webm, 120)  # ~100 ms of audio per piece
    result = run_job({"chunks": chunks, "chunk_format": {"encoding": "encoded"}, "task": "transcribe"})[-1]
    _check_segments(result)
    assert result["metadata"]["source"]["codec"] == "opus"
    assert result["metadata"]["chunks"]["consumed_at_first_segment"] < len(chunks) / 2


def test_segments_are_yielded_before_a_bad_late_chunk_is_reached(handler_module, four_utterances_wav: Path) -> None:
    """Proof of incremental processing from the outside: events for early utterances arrive, then the error."""
    chunks = pcm_chunks(read_wav_16k(four_utterances_wav), 100)
    chunks[-3] = "%%% not base64 %%%"
    events = list(handler_module.handler({"id": "late-bad-chunk", "input": {
        "chunks": chunks, "task": "transcribe", "chunk_format": {"encoding": "pcm_s16le", "sample_rate": 16000}}}))
    assert [e.get("type") for e in events[:-1]] == ["segment"] * (len(events) - 1) and len(events) >= 4
    assert f"chunks[{len(chunks) - 3}]: not valid base64" in events[-1]["error"]


def test_reply_after_each_utterance(run_job, four_utterances_wav: Path) -> None:
    chunks = pcm_chunks(read_wav_16k(four_utterances_wav), 100)
    events = run_job({"chunks": chunks, "chunk_format": {"encoding": "pcm_s16le", "sample_rate": 16000},
                      "reply_mode": "each_utterance", "max_new_tokens": 12})
    kinds = [(e["type"], e.get("turn", e.get("index"))) for e in events[:-1]]
    # segment 0, its reply deltas (turn 0), segment 1, turn 1, ...: turn-taking order.
    order = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert order == [x for n in range(len(FOUR_UTTERANCES)) for x in (("segment", n), ("reply_delta", n))]
    result = events[-1]
    assert [t["segments"] for t in result["turns"]] == [[n] for n in range(len(FOUR_UTTERANCES))]
    assert all(t["reply"] for t in result["turns"])


@pytest.mark.parametrize(("job_input", "expected"), [
    ({"chunks": ["AAAA"]}, "chunks and chunk_format go together"),
    ({"chunks": ["AAAA"], "chunk_format": {"encoding": "pcm_s16le"}}, "sample_rate is required"),
    ({"chunks": [], "chunk_format": {"encoding": "encoded"}}, "'chunks'"),
    ({"chunks": ["AAAA"], "chunk_format": {"encoding": "mulaw", "sample_rate": 8000}}, "'chunk_format.encoding'"),
    ({"chunks": [base64.b64encode(b"not audio at all" * 40).decode()], "chunk_format": {"encoding": "encoded"}},
     "could not"),
])
def test_bad_chunk_jobs(run_job, job_input: dict, expected: str) -> None:
    events = run_job(job_input)
    assert len(events) == 1 and expected in events[0]["error"], events
