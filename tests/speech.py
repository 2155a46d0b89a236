"""Real speech for tests: synthesised by Debian's espeak-ng, converted by sox, transcoded by PyAV."""

from __future__ import annotations

import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import jiwer
import numpy as np
import soxr

UTTERANCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow morning.",
    "What is the weather like in Paris today?",
]


def synthesize(text_or_ssml: str, path: Path, rate: int = 16_000, channels: int = 1, pad_s: float = 0.5) -> Path:
    """espeak-ng speech, resampled by sox to `rate` Hz and `channels` channels, `pad_s` of silence each side."""
    raw = path.with_suffix(".espeak.wav")
    ssml = ["-m"] if text_or_ssml.lstrip().startswith("<speak") else []
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", *ssml, "-w", str(raw), text_or_ssml], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", str(channels), str(path), "pad", str(pad_s), str(pad_s)], check=True
    )
    raw.unlink()
    return path


def utterances_ssml(utterances: list[str], pause_ms: int = 900) -> str:
    """Sentences separated by clear pauses, so the VAD has distinct utterances to find."""
    body = f'<break time="{pause_ms}ms"/>'.join(utterances)
    return f"<speak>{body}</speak>"


def read_wav_16k(path: Path) -> np.ndarray:
    """Decode with PyAV and resample with soxr: independent of the worker's own decoder path."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray().astype(np.float32) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    audio = np.concatenate(frames, axis=1).mean(axis=0)
    if audio.dtype != np.float32 or np.abs(audio).max() > 1.5:  # integer PCM
        audio = audio / 32768.0
    return soxr.resample(audio, rate, 16_000).astype(np.float32)


CODECS = {  # name: (container format, codec, file suffix, sample rate)
    "wav": ("wav", "pcm_s16le", ".wav", 16_000),
    "flac": ("flac", "flac", ".flac", 16_000),
    "mp3": ("mp3", "libmp3lame", ".mp3", 22_050),
    "ogg-opus": ("ogg", "libopus", ".ogg", 48_000),
    "webm-opus": ("webm", "libopus", ".webm", 48_000),
    "m4a-aac": ("ipod", "aac", ".m4a", 44_100),
}


def transcode(source: Path, target_dir: Path, codec_name: str) -> Path:
    """Transcode a WAV into one of CODECS with PyAV (bundled FFmpeg)."""
    fmt, codec, suffix, rate = CODECS[codec_name]
    target = target_dir / f"{source.stem}-{codec_name}{suffix}"
    with av.open(str(source)) as inp, av.open(str(target), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        stream.time_base = Fraction(1, rate)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    out.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after lower-casing and dropping punctuation (jiwer)."""
    return jiwer.wer(_words(reference), _words(hypothesis))
