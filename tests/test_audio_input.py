"""Every input kind and every common codec, decoded for real and transcribed by the embedded Whisper."""

from __future__ import annotations

import base64
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.speech import CODECS, UTTERANCES, transcode, word_error_rate

WER_BOUND = 0.15
EXPECTED = " ".join(UTTERANCES)


def _transcribe(run_job, **source: str) -> dict:
    events = run_job({**source, "task": "transcribe"})
    assert "error" not in events[-1], events[-1]
    return events[-1]


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_each_codec_is_decoded_and_transcribed(run_job, three_utterances_wav: Path, speech_dir: Path, codec: str) -> None:
    encoded = transcode(three_utterances_wav, speech_dir, codec)
    result = _transcribe(run_job, audio_path=str(encoded))
    assert word_error_rate(EXPECTED, result["transcript"]) <= WER_BOUND, result["transcript"]
    assert result["metadata"]["source"]["sample_rate"] == CODECS[codec][3]


def test_stereo_48k_is_downmixed_and_resampled(run_job, speech_dir: Path) -> None:
    from tests.speech import synthesize, utterances_ssml

    stereo = synthesize(utterances_ssml(UTTERANCES), speech_dir / "stereo48k.wav", rate=48_000, channels=2)
    result = _transcribe(run_job, audio_path=str(stereo))
    assert result["metadata"]["source"]["channels"] == 2
    assert word_error_rate(EXPECTED, result["transcript"]) <= WER_BOUND


def test_raw_base64_and_data_uri(run_job, three_utterances_wav: Path, speech_dir: Path) -> None:
    mp3 = transcode(three_utterances_wav, speech_dir, "mp3").read_bytes()
    encoded = base64.b64encode(mp3).decode()
    for payload in (encoded, f"data:audio/mpeg;base64,{encoded}"):
        result = _transcribe(run_job, audio_base64=payload)
        assert word_error_rate(EXPECTED, result["transcript"]) <= WER_BOUND


@pytest.fixture
def loopback_server(speech_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server; the SSRF escape hatch is on only for the test that uses this fixture."""
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(speech_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_is_fetched(run_job, three_utterances_wav: Path, loopback_server: str) -> None:
    result = _transcribe(run_job, audio_url=f"{loopback_server}/{three_utterances_wav.name}")
    assert word_error_rate(EXPECTED, result["transcript"]) <= WER_BOUND


def test_url_404_is_a_clear_error(run_job, loopback_server: str) -> None:
    events = run_job({"audio_url": f"{loopback_server}/missing.wav"})
    assert "HTTP 404" in events[-1]["error"]


def test_loopback_url_is_refused_without_the_escape_hatch(run_job, three_utterances_wav: Path) -> None:
    assert "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS" not in os.environ
    for url in ("http://127.0.0.1:9/x.wav", "http://[::1]:9/x.wav", "http://10.0.0.1/x.wav", "http://[::ffff:127.0.0.1]/a"):
        events = run_job({"audio_url": url})
        assert "refused" in events[-1]["error"], (url, events)


def test_paths_cannot_escape_the_allowed_roots(run_job, three_utterances_wav: Path, speech_dir: Path) -> None:
    link = speech_dir / "escape.wav"
    if not link.exists():
        link.symlink_to("/etc/hostname")
    for path in (str(link), str(speech_dir / ".." / ".." / ".." / ".." / "etc" / "passwd"), "/proc/self/environ"):
        assert "outside the allowed directories" in run_job({"audio_path": path})[-1]["error"], path
    assert "not a regular file" in run_job({"audio_path": str(speech_dir)})[-1]["error"]
    relative = os.path.relpath(three_utterances_wav)  # relative paths resolve against the working directory
    assert _transcribe(run_job, audio_path=relative)["segments"]
