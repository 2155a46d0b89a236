"""Decode any common audio container/codec to 16 kHz mono float32, block by block.

PyAV (bundled FFmpeg) demuxes and decodes wav, flac, mp3, ogg/opus, webm/opus,
m4a/aac and video files' audio tracks; soxr resamples (high quality, streaming).
Decoding is incremental so the duration cap is enforced while decoding, and
later stages can start on the first blocks before the file is fully decoded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np
import soxr

from worker.errors import JobError

SAMPLE_RATE = 16_000
SUPPORTED = "wav, flac, mp3, ogg/opus, webm/opus, m4a/aac (or a video file with an audio track)"


@dataclass
class SourceFormat:
    """What the decoder found; filled in as decoding starts."""

    container: str = ""
    codec: str = ""
    sample_rate: int = 0
    channels: int = 0
    warnings: list[str] = field(default_factory=list)


class StreamingResampler:
    """Downmix to mono, sanitise, and resample to 16 kHz in a stream (soxr keeps filter state)."""

    def __init__(self, input_rate: int) -> None:
        self.input_rate = input_rate
        self._soxr = None if input_rate == SAMPLE_RATE else soxr.ResampleStream(
            input_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """`samples` is (channels, n) or (n,) float; returns mono float32 at 16 kHz."""
        mono = samples.mean(axis=0) if samples.ndim == 2 else samples
        # NaN/inf would poison VAD state and the models; clip keeps float PCM in range.
        mono = np.clip(np.nan_to_num(mono.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        if self._soxr is None:
            return mono
        return self._soxr.resample_chunk(mono, last=last)


def decode_blocks(
    data: bytes | BinaryIO, max_seconds: float, fmt: SourceFormat | None = None
) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of the first audio track in `data`.

    `data` may be a non-seekable stream that produces bytes lazily (streamed chunks): PyAV
    reads only what it needs for the next frames, so decoding keeps pace with arrival.
    Raises JobError for undecodable data, no audio track, or audio over `max_seconds`.
    """
    if isinstance(data, bytes):
        if not data:
            raise JobError("the audio is empty (0 bytes)")
        data = io.BytesIO(data)
    fmt = fmt if fmt is not None else SourceFormat()
    produced = 0
    try:
        container = av.open(data, mode="r", metadata_errors="ignore", buffer_size=8192)
    except (av.FFmpegError, ValueError, OSError) as err:
        raise JobError(f"could not read the audio: {_reason(err)}; supported formats: {SUPPORTED}") from None
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise JobError("the file has no audio track")
        fmt.container = container.format.name
        fmt.codec = stream.codec_context.name
        to_float = av.AudioResampler(format="fltp")  # sample format only: rate and layout kept
        resampler: StreamingResampler | None = None
        try:
            for frame in container.decode(stream):
                for planar in to_float.resample(frame):
                    if resampler is None:
                        fmt.sample_rate, fmt.channels = planar.sample_rate, len(planar.layout.channels)
                        resampler = StreamingResampler(planar.sample_rate)
                    block = resampler.process(planar.to_ndarray())
                    produced += len(block)
                    check_duration(produced, max_seconds)
                    if len(block):
                        yield block
        except av.FFmpegError as err:
            if produced == 0:
                raise JobError(f"could not decode the audio: {_reason(err)}; supported formats: {SUPPORTED}") from None
            # A truncated or damaged file: keep what decoded cleanly, as players do, and say so.
            fmt.warnings.append(
                f"decoding stopped early at {produced / SAMPLE_RATE:.2f} s ({_reason(err)}); "
                "the file may be truncated"
            )
        if resampler is None:
            raise JobError(f"the audio track holds no decodable samples; supported formats: {SUPPORTED}")
        tail = resampler.process(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield tail


def check_duration(samples: int, max_seconds: float) -> None:
    if samples > max_seconds * SAMPLE_RATE:
        raise JobError(
            f"the audio is longer than the {max_seconds:g} s limit (WORKER_MAX_AUDIO_SECONDS); "
            "split it into shorter jobs"
        )


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
