"""Real speech for tests: synthesised by Debian's espeak-ng, converted by sox, transcoded by PyAV."""

from __future__ import annotations

import io
import re
import subprocess
import wave
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
        # -R: sox seeds its dither randomly otherwise, and test speech would differ run to run.
        ["sox", "-R", str(raw), "-r", str(rate), "-c", str(channels), str(path), "pad", str(pad_s), str(pad_s)],
        check=True,
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
    return audio.astype(np.float32) if rate == 16_000 else soxr.resample(audio, rate, 16_000).astype(np.float32)


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


FOUR_UTTERANCES = [
    "Good morning this is the first sentence.",  # no commas: espeak pauses there long enough to split
    "Now I will read the second sentence slowly.",
    "Here comes the third one after a pause.",
    "And this is the last thing I will say.",
]


def pcm_chunks(audio_16k: np.ndarray, chunk_ms: int, encoding: str = "pcm_s16le", rate: int = 16_000,
               channels: int = 1) -> list[str]:
    """Base64 raw PCM chunks of `chunk_ms`, as a Web Audio / pyaudio client would send them."""
    import base64

    audio = soxr.resample(audio_16k, 16_000, rate).astype(np.float32) if rate != 16_000 else audio_16k
    frames = np.repeat(audio[:, np.newaxis], channels, axis=1)
    # x 32768 so 16-bit sources round-trip exactly (the decoder divides by 32768).
    raw = np.clip(np.round(frames * 32768), -32768, 32767).astype("<i2").tobytes() if encoding == "pcm_s16le" \
        else frames.astype("<f4").tobytes()
    step = rate * chunk_ms // 1000 * channels * (2 if encoding == "pcm_s16le" else 4)
    return [base64.b64encode(raw[i : i + step]).decode() for i in range(0, len(raw), step)]


def byte_chunks(data: bytes, count: int) -> list[str]:
    """An encoded file cut into `count` pieces at arbitrary byte offsets, as MediaRecorder timeslices are."""
    import base64

    step = -(-len(data) // count)
    return [base64.b64encode(data[i : i + step]).decode() for i in range(0, len(data), step)]


def tone_wav(channels: int = 1, rate: int = 16_000, seconds: float = 0.2) -> bytes:
    """A 440 Hz tone as a 16-bit WAV in memory: seed input for the decoder fuzzers."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 12_000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())
    return buffer.getvalue()


def encoded_tone(container: str, codec: str, rate: int) -> bytes:
    """`tone_wav()` re-encoded in memory by PyAV (e.g. "ogg", "libopus", 48000)."""
    import av

    wav = tone_wav()
    out_buffer = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out_buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            frame.pts = None
            for piece in resampler.resample(frame):
                for packet in stream.encode(piece):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return out_buffer.getvalue()
