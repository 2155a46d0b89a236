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

import base64
import binascii
import io
from collections.abc import Iterator, Sequence

import numpy as np

from worker.audio_decode import SourceFormat, StreamingResampler, check_duration, decode_blocks
from worker.contract import ChunkFormat
from worker.errors import JobError

_PCM_DTYPES = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def decode_chunk(chunks: Sequence[str], index: int) -> bytes:
    try:
        return base64.b64decode(chunks[index], validate=True)
    except (binascii.Error, ValueError) as err:
        raise JobError(f"chunks[{index}]: not valid base64 ({err})") from None


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
        resampler = StreamingResampler(fmt.sample_rate)
        carry = b""  # bytes of an incomplete frame at the end of the previous chunk
        produced = 0
        for index in range(len(self._chunks)):
            data = carry + decode_chunk(self._chunks, index)
            self._pcm_consumed = index + 1
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
