"""Voice activity detection: Silero v6 (ONNX, via onnxruntime) as a streaming segmenter.

The model file is the one faster-whisper ships (already a dependency): its graph
takes a batch of consecutive 512-sample frames (each with 64 samples of context)
and carries the LSTM state (h, c) through them in order, so one call scores every
whole frame of a block and the state carries over to the next block.

`SileroVad` holds the shared ONNX session; `SpeechSegmenter` is per job: feed it
16 kHz audio blocks of any size and it yields each speech segment as soon as the
speaker has been silent for `min_silence_ms`, so whole files and streamed chunks
go through the same code.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

SAMPLE_RATE = 16_000
FRAME = 512  # samples per Silero step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame Silero v6 expects in front of each frame
NEG_THRESHOLD_GAP = 0.15  # hysteresis: speech ends below threshold - 0.15, as Silero's reference code


def bundled_silero_path() -> Path:
    """faster-whisper ships Silero v6 as an asset; find it without importing torch-heavy packages."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("faster-whisper is not installed; it carries the Silero VAD model")
    return Path(spec.origin).parent / "assets" / "silero_vad_v6.onnx"


State = tuple[np.ndarray, np.ndarray]  # LSTM (h, c)


class SileroVad:
    """The ONNX session, loaded once and shared by every job (InferenceSession.run is thread-safe)."""

    def __init__(self, model_path: Path | None = None, threads: int = 1) -> None:
        self.model_path = model_path or bundled_silero_path()
        options = onnxruntime.SessionOptions()
        # One thread: a 576-sample frame is too small to gain from more, and ASR wants the cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def new_state(self) -> State:
        return np.zeros((1, 1, 128), dtype=np.float32), np.zeros((1, 1, 128), dtype=np.float32)

    def speech_probabilities(self, frames: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """`frames` is (n, 64 + 512): consecutive frames with context. Returns n probabilities and the new state."""
        probs, h, c = self._session.run(None, {"input": frames, "h": state[0], "c": state[1]})
        return probs.reshape(-1), (h, c)


class _AudioBuffer:
    """Retained audio as a list of blocks, so appending never copies what is already held."""

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self.start = 0  # sample offset of the first retained sample
        self.end = 0  # sample offset just past the last retained sample

    def append(self, block: np.ndarray) -> None:
        if len(block):
            self._blocks.append(block)
            self.end += len(block)

    def slice(self, start: int, end: int) -> np.ndarray:
        parts, offset = [], self.start
        for block in self._blocks:
            lo, hi = max(start, offset), min(end, offset + len(block))
            if lo < hi:
                parts.append(block[lo - offset : hi - offset])
            offset += len(block)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def drop_before(self, sample: int) -> None:
        """Forget whole blocks that end at or before `sample`."""
        while self._blocks and self.start + len(self._blocks[0]) <= sample:
            self.start += len(self._blocks.pop(0))


@dataclass(frozen=True)
class VadParams:
    threshold: float = 0.5
    min_speech_ms: int = 100
    min_silence_ms: int = 200
    speech_pad_ms: int = 30
    max_segment_s: float = 28.0


@dataclass(frozen=True)
class SpeechSegment:
    start: int  # sample offsets in the job's 16 kHz audio
    end: int
    audio: np.ndarray

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


class SpeechSegmenter:
    """Per-job streaming segmenter. Not thread-safe; one per job."""

    def __init__(self, vad: SileroVad, params: VadParams) -> None:
        self._vad = vad
        self._p = params
        self._state = vad.new_state()
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet run through the model
        self._buffer = _AudioBuffer()
        self._position = 0  # samples run through the model so far
        self._speech_start: int | None = None
        self._silence_start: int | None = None
        self._last_end = 0  # end of the last emitted segment (padding never overlaps it)
        self._min_silence = params.min_silence_ms * SAMPLE_RATE // 1000
        self._min_speech = params.min_speech_ms * SAMPLE_RATE // 1000
        self._pad = params.speech_pad_ms * SAMPLE_RATE // 1000
        self._max_segment = int(params.max_segment_s * SAMPLE_RATE)
        self.frames = 0

    def feed(self, block: np.ndarray) -> Iterator[SpeechSegment]:
        """Add audio; yield every segment that closed."""
        self._buffer.append(block)
        self._pending = np.concatenate([self._pending, block])
        count = len(self._pending) // FRAME
        if count:
            frames = self._pending[: count * FRAME].reshape(count, FRAME)
            contexts = np.concatenate([self._context[np.newaxis], frames[:-1, -CONTEXT:]])
            probs, self._state = self._vad.speech_probabilities(np.hstack([contexts, frames]), self._state)
            self._context = frames[-1, -CONTEXT:].copy()
            self._pending = self._pending[count * FRAME :]
            for prob in probs:
                yield from self._step(float(prob))
        self._trim()

    def finish(self) -> Iterator[SpeechSegment]:
        """End of audio: close an open segment."""
        total = self._buffer.end
        if self._speech_start is not None:
            end = self._silence_start if self._silence_start is not None else total
            yield from self._close(self._speech_start, end, total)
            self._speech_start = None

    def _step(self, prob: float) -> Iterator[SpeechSegment]:
        frame_start, self._position = self._position, self._position + FRAME
        self.frames += 1
        p = self._p
        if prob >= p.threshold:
            self._silence_start = None
            if self._speech_start is None:
                self._speech_start = frame_start
        elif self._speech_start is not None and prob < p.threshold - NEG_THRESHOLD_GAP:
            if self._silence_start is None:
                self._silence_start = frame_start
            if self._position - self._silence_start >= self._min_silence:
                yield from self._close(self._speech_start, self._silence_start, self._position)
                self._speech_start = self._silence_start = None
        if self._speech_start is not None and self._position - self._speech_start >= self._max_segment:
            # Too long for one model window: cut at the latest silence if any, else here.
            in_silence = self._silence_start is not None
            cut = self._silence_start if in_silence else self._position
            yield from self._close(self._speech_start, cut, self._position)
            self._speech_start = None if in_silence else self._position
            self._silence_start = None

    def _close(self, start: int, end: int, available: int) -> Iterator[SpeechSegment]:
        if end - start < self._min_speech:
            return
        padded_start = max(start - self._pad, self._last_end, self._buffer.start)
        padded_end = min(end + self._pad, available)
        self._last_end = padded_end
        yield SpeechSegment(padded_start, padded_end, self._buffer.slice(padded_start, padded_end))

    def _trim(self) -> None:
        """Drop audio no future segment can need."""
        keep_from = self._speech_start if self._speech_start is not None else self._position
        self._buffer.drop_before(keep_from - self._pad)
