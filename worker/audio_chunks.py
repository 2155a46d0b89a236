"""Streamed chunk input: an ordered list of base64 chunks, processed as if arriving live.

Two kinds of stream:
- raw PCM (`pcm_s16le` or `f32le`, with sample rate and channels), as Web Audio or pyaudio produce;
  a chunk may end mid-sample or mid-frame, the remainder carries into the next chunk;
- an encoded stream cut into pieces (e.g. browser MediaRecorder `audio/webm;codecs=opus`), only
  decodable as one concatenated stream: PyAV reads it through a lazy, non-seekable reader, so each
  chunk is base64-decoded only when the demuxer needs its bytes.

Either way blocks of 16 kHz audio come out chunk by chunk, and the pipeline's VAD closes and
transcribes an utterance before later chunks are even decoded.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Iterator, Sequence

import numpy as np

from worker.audio_decode import SourceFormat, StreamingResampler, check_duration, decode_blocks
from worker.audio_source import b64decode_strict
from worker.contract import ChunkFormat
from worker.errors import JobError

_PCM_DTYPES = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}

# Starts of files that are not raw samples: (what, magic, offset of the magic). Long enough that raw PCM
# matching one by chance is not a practical concern.
_CONTAINER_MAGIC = (
    ("WAV", b"WAVE", 8), ("Ogg", b"OggS\x00", 0), ("FLAC", b"fLaC", 0),
    ("WebM/Matroska", b"\x1a\x45\xdf\xa3", 0), ("MP4/M4A", b"ftyp", 4), ("MP3 (ID3)", b"ID3", 0),
)


def decode_chunk(chunks: Sequence[str], index: int) -> bytes:
    try:
        return b64decode_strict(chunks[index])
    except (binascii.Error, ValueError) as err:
        raise JobError(f"chunks[{index}]: not valid base64: {err}") from None


def _container_in_pcm(data: bytes) -> str | None:
    """The file type `data` starts with, if it is a container/codec file rather than raw samples."""
    for name, magic, offset in _CONTAINER_MAGIC:
        if data[offset : offset + len(magic)] != magic:
            continue
        confirmed = {
            "WAV": data[:4] == b"RIFF",
            "FLAC": data[4:5] in (b"\x00", b"\x80") and data[5:8] == b"\x00\x00\x22",  # STREAMINFO block
            "MP3 (ID3)": data[3:4] in (b"\x02", b"\x03", b"\x04") and data[4:5] == b"\x00",  # ID3v2.2-2.4
        }.get(name, True)
        if confirmed:
            return name
    return None


class ChunkReader(io.RawIOBase):
    """A read-only, non-seekable byte stream over base64 chunks, decoded one at a time on demand."""

    def __init__(self, chunks: Sequence[str]) -> None:
        self._chunks = chunks
        self.consumed = 0  # chunks decoded so far
        self._current = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._current and self.consumed < len(self._chunks):
            self._current = decode_chunk(self._chunks, self.consumed)
            self.consumed += 1
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


class ChunkedAudio:
    """Turns a job's chunks into 16 kHz mono float32 blocks; `consumed` says how many chunks were read."""

    def __init__(self, chunks: Sequence[str], fmt: ChunkFormat, max_seconds: float, source: SourceFormat) -> None:
        self._chunks = chunks
        self._fmt = fmt
        self._max_seconds = max_seconds
        self._source = source
        self._reader: ChunkReader | None = None
        self._pcm_consumed = 0

    @property
    def consumed(self) -> int:
        return self._reader.consumed if self._reader is not None else self._pcm_consumed

    def blocks(self) -> Iterator[np.ndarray]:
        if not any(self._chunks):
            raise JobError(f"chunks: all {len(self._chunks)} chunk(s) are empty strings; there is no audio")
        if self._fmt.encoding == "encoded":
            self._reader = ChunkReader(self._chunks)
            yield from decode_blocks(self._reader, self._max_seconds, self._source)  # type: ignore[arg-type]
        else:
            yield from self._pcm_blocks()

    def _pcm_blocks(self) -> Iterator[np.ndarray]:
        fmt, source = self._fmt, self._source
        assert fmt.sample_rate is not None  # the contract requires it for PCM
        dtype = _PCM_DTYPES[fmt.encoding]
        source.container, source.codec = "raw", fmt.encoding
        source.sample_rate, source.channels = fmt.sample_rate, fmt.channels
        frame_bytes = dtype.itemsize * fmt.channels
        # Tiny chunks (down to 1 byte) are gathered to 10 ms first: per-chunk work would otherwise make a flood
        # of them cost ~50 us each.
        min_bytes = frame_bytes * max(1, fmt.sample_rate // 100)
        resampler = StreamingResampler(fmt.sample_rate)
        carry = b""  # bytes of an incomplete frame at the end of the previous chunk
        produced = 0
        for index in range(len(self._chunks)):
            chunk = decode_chunk(self._chunks, index)
            container = _container_in_pcm(chunk)
            if container is not None:
                raise JobError(
                    f"chunks[{index}] starts with a file header ({container}), but chunk_format.encoding is "
                    f"{fmt.encoding}: send files and encoded streams with encoding 'encoded', raw samples without "
                    "a header"
                )
            data = carry + chunk
            self._pcm_consumed = index + 1
            if len(data) < min_bytes and index + 1 < len(self._chunks):
                carry = data
                continue
            usable = len(data) - len(data) % frame_bytes
            carry = data[usable:]
            samples = np.frombuffer(data[:usable], dtype=dtype).reshape(-1, fmt.channels).T
            if dtype.kind == "i":
                samples = samples.astype(np.float32) / 32768.0
            block = resampler.process(samples)
            produced += len(block)
            check_duration(produced, self._max_seconds)
            if len(block):
                yield block
        if carry:
            source.warnings.append(f"the last {len(carry)} byte(s) did not make a whole sample frame and were ignored")
        tail = resampler.process(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield tail
