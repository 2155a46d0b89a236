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
MIN_SOURCE_RATE = 1_000  # no speech fits below this; a header claiming less is broken or hostile (x16000 upsampling)
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
        with np.errstate(over="ignore", invalid="ignore"):  # huge or non-finite float PCM: fixed just below
            mono = samples.mean(axis=0) if samples.ndim == 2 else samples
        # NaN/inf would poison VAD state and the models; clip keeps float PCM in range.
        mono = np.clip(np.nan_to_num(mono.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        if self._soxr is None:
            return mono
        # Clipped again: a band-limited filter rings past full scale on hard-clipped or adversarial input (~1.4x).
        out = self._soxr.resample_chunk(mono, last=last)
        return np.clip(out, -1.0, 1.0, out=out)


def decode_blocks(
    data: bytes | BinaryIO, max_seconds: float, fmt: SourceFormat | None = None
) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of the first audio track in `data`.

    `data` may be a non-seekable stream that produces bytes lazily (streamed chunks): PyAV
    reads only what it needs for the next frames, so decoding keeps pace with arrival.
    Raises JobError for undecodable data, no audio track, or audio over `max_seconds`.
    """
    wav_shortfall: int | None = None
    if isinstance(data, bytes):
        if not data:
            raise JobError("the audio is empty (0 bytes)")
        wav_shortfall = _wav_shortfall(data)
        data = io.BytesIO(data)
    fmt = fmt if fmt is not None else SourceFormat()
    produced = 0
    try:
        container = av.open(data, mode="r", metadata_errors="ignore", buffer_size=8192)
    except (av.FFmpegError, ValueError, OSError) as err:
        if isinstance(err, av.EOFError):
            raise JobError(
                "could not read the audio: the data ends before its first audio frame (a truncated or incomplete "
                f"file?); supported formats: {SUPPORTED}"
            ) from None
        raise JobError(f"could not read the audio: {_reason(err)}; supported formats: {SUPPORTED}") from None
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            found = ", ".join(sorted({str(s.type) for s in container.streams})) or "no streams"
            raise JobError(f"the file has no audio track (found: {found}); send a file with sound")
        fmt.container = container.format.name
        if stream.codec_context is None:  # FFmpeg knows no decoder for the track's codec (e.g. an unknown WAV tag)
            raise JobError(
                f"the audio track's codec is not one this worker can decode (container {fmt.container}); "
                f"supported formats: {SUPPORTED}"
            )
        fmt.codec = stream.codec_context.name
        # Float samples, rate and layout kept. Planar (a pass-through for most decoders) for mono and stereo;
        # packed otherwise: PyAV 18's planar frames of 8 or more channels report a wrong plane count (AVFrame
        # holds 8 data pointers) and to_ndarray crashes the process. A mid-stream change of format, layout or
        # rate (chained streams, concatenated files) gets a fresh converter instead of PyAV's ValueError.
        to_float: av.AudioResampler | None = None
        frame_key: tuple[str, str, int] | None = None
        resampler: StreamingResampler | None = None
        seconds_in = 0.0  # decoded duration at the source rate: the cap trips before any resampling work
        try:
            for frame in container.decode(stream):
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if to_float is None or key != frame_key:
                    planar = len(frame.layout.channels) <= 2
                    to_float, frame_key = av.AudioResampler(format="fltp" if planar else "flt"), key
                for converted in to_float.resample(frame):
                    channels, rate = len(converted.layout.channels), converted.sample_rate
                    if not converted.samples or not channels or rate <= 0:
                        continue
                    if rate < MIN_SOURCE_RATE:
                        raise JobError(
                            f"the audio claims a sample rate of {rate} Hz, below the {MIN_SOURCE_RATE} Hz any "
                            "speech needs: the file's header is wrong; re-encode it"
                        )
                    seconds_in += converted.samples / rate
                    check_duration(round(seconds_in * SAMPLE_RATE), max_seconds)
                    if resampler is None:
                        fmt.sample_rate, fmt.channels = rate, channels  # as the stream starts
                        resampler = StreamingResampler(rate)
                    elif resampler.input_rate != rate:  # the rate changed mid-stream: flush, then a new filter
                        yield from _non_empty(resampler.process(np.zeros(0, dtype=np.float32), last=True))
                        resampler = StreamingResampler(rate)
                    samples = converted.to_ndarray()
                    if not converted.format.is_planar:
                        samples = samples.reshape(-1, channels).T  # interleaved -> (channels, n)
                    block = resampler.process(samples)
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
        declared = _declared_seconds(stream, container)
        if not fmt.warnings and declared is not None and declared - seconds_in > max(0.25, 0.02 * declared):
            fmt.warnings.append(
                f"decoded {seconds_in:.2f} s of the {declared:.2f} s the file declares; the file may be truncated"
            )
        elif not fmt.warnings and wav_shortfall:
            fmt.warnings.append(
                f"the WAV header declares {wav_shortfall} more byte(s) of audio than the file holds; "
                "the file may be truncated"
            )
        yield from _non_empty(resampler.process(np.zeros(0, dtype=np.float32), last=True))


def _non_empty(block: np.ndarray) -> Iterator[np.ndarray]:
    if len(block):
        yield block


def _declared_seconds(stream: av.audio.stream.AudioStream, container: av.container.InputContainer) -> float | None:
    """The duration the file's headers claim (None when they do not say)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _wav_shortfall(data: bytes) -> int | None:
    """Bytes a RIFF/WAVE 'data' chunk declares beyond the end of `data` (FFmpeg silently clamps them)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"data":
            if size in (0, 0xFFFFFFFF):  # "unknown length", as streaming recorders write
                return None
            return max(0, size - (len(data) - offset - 8)) or None
        offset += 8 + size + (size & 1)
    return None


def check_duration(samples: int, max_seconds: float) -> None:
    if samples > max_seconds * SAMPLE_RATE:
        raise JobError(
            f"the audio is longer than the {max_seconds:g} s limit (WORKER_MAX_AUDIO_SECONDS); "
            "split it into shorter jobs"
        )


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
