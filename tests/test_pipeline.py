"""End to end through the real handler on the embedded engines (Whisper base, Silero, SmolLM2).

Real espeak-ng speech, real decoding, real models: nothing is mocked.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.speech import UTTERANCES, word_error_rate

WER_BOUND = 0.15  # Whisper base measured ~2 % on espeak speech; the bound leaves room for voice changes


def test_reply_job_streams_segments_then_reply_then_result(run_job, three_utterances_wav: Path) -> None:
    events = run_job({"audio_path": str(three_utterances_wav), "max_new_tokens": 24})
    kinds = [e.get("type") for e in events]
    assert "error" not in events[-1], events[-1]
    # Order: every segment, then every reply delta, then exactly one result at the end.
    assert kinds[-1] == "result" and kinds.count("result") == 1
    first_delta = kinds.index("reply_delta")
    assert set(kinds[:first_delta]) == {"segment"}
    assert set(kinds[first_delta:-1]) == {"reply_delta"}

    result = events[-1]
    assert len(result["segments"]) == len(UTTERANCES)  # the VAD found each utterance
    for segment, expected in zip(result["segments"], UTTERANCES):
        assert word_error_rate(expected, segment["text"]) <= 0.25, segment
    assert word_error_rate(" ".join(UTTERANCES), result["transcript"]) <= WER_BOUND
    assert result["reply"] and result["reply"] == "".join(e["text"] for e in events if e["type"] == "reply_delta").strip()


def test_result_metadata_reports_stages_rtf_and_health(run_job, three_utterances_wav: Path) -> None:
    result = run_job({"audio_path": str(three_utterances_wav), "max_new_tokens": 8})[-1]
    meta = result["metadata"]
    timings = meta["timings_ms"]
    for stage in ("fetch_ms", "decode_ms", "vad_ms", "asr_ms", "llm_ttft_ms", "llm_ms", "total_ms"):
        assert timings[stage] >= 0, stage
    assert timings["total_ms"] >= timings["asr_ms"] + timings["llm_ms"]
    assert 8.0 < meta["audio_seconds"] < 15.0
    assert meta["real_time_factor"] == pytest.approx(timings["total_ms"] / 1000 / meta["audio_seconds"], rel=1e-3)
    assert meta["time_to_first_segment_ms"] < timings["total_ms"]
    assert meta["source"]["codec"] == "pcm_s16le" and meta["source"]["sample_rate"] == 16000
    assert meta["language"] == {"requested": None, "used": "en"}  # detected once, then kept for the job
    health = meta["health"]
    assert health["asr"]["name"] == "faster-whisper" and health["llm"]["name"] == "llama.cpp"
    assert "embedded" in health["engine_selection"]
    assert health["warmup_seconds"] > 0 and health["jobs_served"] >= 1
    assert health["memory"]["rss_mb"] > 100
    assert "runpod" in health["versions"]


def test_transcribe_task_gives_no_reply(run_job, three_utterances_wav: Path) -> None:
    events = run_job({"audio_path": str(three_utterances_wav), "task": "transcribe"})
    assert all(e["type"] != "reply_delta" for e in events)
    assert events[-1]["reply"] is None
    assert "llm_ms" not in events[-1]["metadata"]["timings_ms"]


def test_history_and_system_prompt_reach_the_reply(run_job, three_utterances_wav: Path) -> None:
    events = run_job({
        "audio_path": str(three_utterances_wav),
        "system_prompt": "Answer in one short sentence.",
        "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "max_new_tokens": 16,
        "temperature": 0.0,
    })
    assert events[-1]["reply"]


def test_silence_gives_a_result_with_a_warning_not_an_empty_success(run_job, speech_dir: Path) -> None:
    import subprocess

    silence = speech_dir / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silence), "trim", "0", "3"], check=True)
    result = run_job({"audio_path": str(silence)})[-1]
    assert result["type"] == "result" and result["segments"] == [] and result["reply"] is None
    assert any("no speech" in w for w in result["warnings"])


def test_vad_disabled_transcribes_the_whole_audio(run_job, three_utterances_wav: Path) -> None:
    result = run_job({"audio_path": str(three_utterances_wav), "task": "transcribe", "vad": {"enabled": False}})[-1]
    assert len(result["segments"]) == 1
    assert word_error_rate(" ".join(UTTERANCES), result["transcript"]) <= WER_BOUND


def test_bad_jobs_get_actionable_errors_and_the_worker_keeps_serving(run_job, three_utterances_wav: Path) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "exactly one audio source"),
        ({"audio_path": "a.wav", "audio_url": "http://x"}, "exactly one audio source"),
        ({"audio_path": str(three_utterances_wav), "colour": "red"}, "'colour' is not a known field"),
        ({"audio_path": str(three_utterances_wav), "max_new_tokens": "5"}, "'max_new_tokens'"),
        ({"audio_path": str(three_utterances_wav), "vad": {"threshold": 1.5}}, "'vad.threshold'"),
        ({"audio_path": str(three_utterances_wav), "language": "english"}, "'language'"),
        ({"audio_path": str(three_utterances_wav), "language": "zz"}, "not supported"),
        ({"audio_path": "/etc/passwd"}, "outside the allowed directories"),
        ({"audio_path": "/nonexistent/x.wav"}, "no such file"),
        ({"audio_base64": "!!!notbase64"}, "not valid base64"),
        ({"audio_base64": base64.b64encode(b"definitely not audio" * 50).decode()}, "could not"),
        ({"audio_base64": "data:text/plain;base64,aGVsbG8="}, "is not audio"),
        ({"audio_url": "file:///etc/passwd"}, "blocked URL scheme"),
        ({"audio_url": "http://169.254.169.254/latest/meta-data"}, "non-public address"),
        ("not an object", "must be a JSON object"),
    ]
    for job_input, expected in cases:
        events = run_job(job_input)
        assert len(events) == 1 and set(events[0]) == {"error"}, (job_input, events)
        assert expected in events[0]["error"], (job_input, events[0]["error"])
    # ... and the same worker still serves a good job.
    result = run_job({"audio_path": str(three_utterances_wav), "task": "transcribe"})[-1]
    assert result["type"] == "result" and len(result["segments"]) == len(UTTERANCES)
