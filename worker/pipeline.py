"""VAD -> ASR -> LLM over one job's audio, yielding events as soon as each exists.

Audio is decoded block by block (files and streamed chunks alike) and fed to the
streaming VAD; each speech segment is transcribed the moment it closes, so the
first segment event goes out long before a long file or chunk list is consumed.
Replies stream token by token, once at the end or after every utterance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.audio_chunks import ChunkedAudio
from worker.audio_decode import SAMPLE_RATE, SourceFormat, decode_blocks
from worker.audio_source import decode_base64_audio, download_url, read_confined_path
from worker.contract import JobInput, ReplyDeltaEvent, ResultEvent, SegmentEvent, Turn
from worker.engines.base import ChatMessage, Engines, GenerationOptions
from worker.errors import JobError
from worker.metrics import StageTimer, WorkerHealth
from worker.settings import Settings
from worker.vad import SileroVad, SpeechSegment, SpeechSegmenter, VadParams


@dataclass
class _Progress:
    """How far the job's audio has got: samples decoded, VAD frames, and when each sample arrived."""

    samples: int = 0
    vad_frames: int = 0
    bytes_in: int = 0
    arrivals: deque[tuple[int, float]] = field(default_factory=deque)  # (end sample of a block, job time fed)
    chunks: ChunkedAudio | None = None

    def arrival_time(self, sample: int) -> float | None:
        """Job time at which `sample` was fed to the VAD (older entries are dropped as segments close)."""
        while self.arrivals and self.arrivals[0][0] < sample:
            self.arrivals.popleft()
        return self.arrivals[0][1] if self.arrivals else None


class Pipeline:
    def __init__(self, engines: Engines, vad: SileroVad, settings: Settings, health: WorkerHealth) -> None:
        self.engines = engines
        self.vad = vad
        self.settings = settings
        self.health = health

    def run(self, job: JobInput) -> Iterator[dict[str, Any]]:
        timer = StageTimer()
        self._check_request(job)
        source = SourceFormat()
        progress = _Progress()
        blocks = _timed(self._open_audio(job, source, progress, timer), timer, "decode")

        segments: list[SegmentEvent] = []
        segment_timing: list[dict[str, Any]] = []
        turns: list[Turn] = []
        heard: list[np.ndarray] = []  # kept only when the chat model listens to the audio
        per_utterance = job.task == "reply" and job.reply_mode == "each_utterance"
        # Detected on the first segment, then kept for the job, as Whisper's own transcribe() does
        # for a file: detecting per segment costs a second encoder pass each time.
        language = job.language
        for speech in self._segment(job, blocks, timer, progress):
            closed_at = timer.elapsed()
            with timer.stage("asr"):
                (transcript,) = self.engines.asr.transcribe([speech.audio], language)
            language = language or transcript.language
            if job.reply_with_audio:
                heard.append(speech.audio)
            if not transcript.text:
                continue
            event = SegmentEvent(
                index=len(segments), start=round(speech.start_s, 3), end=round(speech.end_s, 3),
                text=transcript.text, language=transcript.language,
            )
            segments.append(event)
            timer.mark("first_segment")
            if progress.chunks is not None and len(segments) == 1:
                timer.marks["chunks_consumed_at_first_segment"] = progress.chunks.consumed
            segment_timing.append(self._segment_timing(event, closed_at, speech, timer, progress))
            yield event.model_dump()
            if per_utterance:
                yield from self._reply(job, segments, [event.index], turns, _concat(heard), timer)
                heard.clear()

        audio_seconds = progress.samples / SAMPLE_RATE
        warnings = list(source.warnings)
        if not segments:
            warnings.append(
                f"no speech found in {audio_seconds:.2f} s of audio (VAD threshold {job.vad.threshold}); "
                "nothing was transcribed" + (" and no reply was generated" if job.task == "reply" else "")
            )
        elif job.task == "reply" and not per_utterance:
            yield from self._reply(job, segments, [s.index for s in segments], turns, _concat(heard), timer)
        if any(not t.reply for t in turns):
            warnings.append("the chat model produced an empty reply")

        total = timer.elapsed()
        metadata = {
            "timings_ms": {**timer.milliseconds(), "total_ms": round(total * 1000, 2)},
            "time_to_first_segment_ms": _ms(timer.marks.get("first_segment")),
            "segment_timings": segment_timing,
            "audio_seconds": round(audio_seconds, 3),
            "real_time_factor": round(total / audio_seconds, 4) if audio_seconds else None,
            "source": {"kind": job.audio_source[0], "bytes": progress.bytes_in, "container": source.container,
                       "codec": source.codec, "sample_rate": source.sample_rate, "channels": source.channels},
            "vad": {**job.vad.model_dump(), "frames": progress.vad_frames},
            "task": job.task,
            "language": {"requested": job.language, "used": language},
            "reply_mode": job.reply_mode,
            "health": self.health.snapshot(),
        }
        if progress.chunks is not None:
            metadata["chunks"] = {
                "count": len(job.chunks or []),
                "consumed_at_first_segment": timer.marks.get("chunks_consumed_at_first_segment"),
            }
        reply = "\n\n".join(t.reply for t in turns).strip() if turns else None
        yield ResultEvent(
            transcript=" ".join(s.text for s in segments), segments=segments, reply=reply, turns=turns,
            warnings=warnings, metadata=metadata,
        ).model_dump()

    def _check_request(self, job: JobInput) -> None:
        """Refuse what the loaded engines cannot do before spending any time on the audio."""
        if job.reply_with_audio and not self.engines.chat.accepts_audio:
            raise JobError(
                f"reply_with_audio needs a chat engine that listens to audio (Voxtral); "
                f"this worker runs {self.engines.chat.info.name}"
            )
        allowed, language = self.engines.asr.languages, job.language
        if language is not None and allowed is not None and language not in allowed:
            raise JobError(
                f"language {language!r} is not supported by {self.engines.asr.info.name}; "
                f"use one of {', '.join(sorted(allowed))} or omit it to auto-detect"
            )

    def _open_audio(
        self, job: JobInput, source: SourceFormat, progress: _Progress, timer: StageTimer
    ) -> Iterator[np.ndarray]:
        s = self.settings
        kind, value = job.audio_source
        if kind == "chunks":
            assert job.chunk_format is not None  # the contract pairs them
            progress.bytes_in = sum(len(c) for c in value) * 3 // 4
            if progress.bytes_in > s.max_audio_bytes:
                raise JobError(
                    f"chunks hold about {progress.bytes_in} bytes, over the {s.max_audio_bytes} byte limit "
                    "(WORKER_MAX_AUDIO_BYTES); split the stream over several jobs"
                )
            progress.chunks = ChunkedAudio(value, job.chunk_format, s.max_audio_seconds, source)
            return progress.chunks.blocks()
        with timer.stage("fetch"):
            if kind == "audio_base64":
                data = decode_base64_audio(value, s.max_audio_bytes)
            elif kind == "audio_path":
                data = read_confined_path(value, s.path_roots, s.max_audio_bytes)
            else:
                data = download_url(value, s.max_audio_bytes, s.url_timeout_seconds)
        progress.bytes_in = len(data)
        return decode_blocks(data, s.max_audio_seconds, source)

    def _segment(
        self, job: JobInput, blocks: Iterable[np.ndarray], timer: StageTimer, progress: _Progress
    ) -> Iterator[SpeechSegment]:
        """Speech segments in time order, each as soon as the VAD closes it."""
        if not job.vad.enabled:
            whole = []
            for block in blocks:
                whole.append(block)
                progress.samples += len(block)
            yield from _fixed_windows(_concat(whole), self.settings.vad_max_segment_seconds)
            return
        v = job.vad
        segmenter = SpeechSegmenter(self.vad, VadParams(
            threshold=v.threshold, min_speech_ms=v.min_speech_ms, min_silence_ms=v.min_silence_ms,
            speech_pad_ms=v.speech_pad_ms, max_segment_s=self.settings.vad_max_segment_seconds,
        ))
        for block in blocks:
            progress.samples += len(block)
            progress.arrivals.append((progress.samples, timer.elapsed()))
            with timer.stage("vad"):
                closed = list(segmenter.feed(block))
            progress.vad_frames = segmenter.frames
            yield from closed
        with timer.stage("vad"):
            closed = list(segmenter.finish())
        yield from closed

    @staticmethod
    def _segment_timing(
        event: SegmentEvent, closed_at: float, speech: SpeechSegment, timer: StageTimer, progress: _Progress
    ) -> dict[str, Any]:
        now = timer.elapsed()
        arrived = progress.arrival_time(speech.end)
        return {
            "index": event.index,
            "asr_ms": round((now - closed_at) * 1000, 2),
            # From the moment the segment's last sample reached the VAD to its event going out.
            "emit_delay_ms": _ms(now - arrived if arrived is not None else None),
        }

    def _reply(
        self, job: JobInput, segments: list[SegmentEvent], answering: list[int], turns: list[Turn],
        audio: np.ndarray | None, timer: StageTimer,
    ) -> Iterator[dict[str, Any]]:
        """One reply turn, streamed; earlier turns of this job become chat history."""
        messages = [ChatMessage("system", job.system_prompt or self.settings.default_system_prompt)]
        messages += [ChatMessage(m.role, m.content) for m in job.history]
        for turn in turns:
            messages.append(ChatMessage("user", " ".join(segments[i].text for i in turn.segments)))
            messages.append(ChatMessage("assistant", turn.reply))
        messages.append(ChatMessage("user", " ".join(segments[i].text for i in answering)))
        options = GenerationOptions(max_new_tokens=job.max_new_tokens, temperature=job.temperature, top_p=job.top_p)
        number = len(turns)
        began = timer.elapsed()
        pieces: list[str] = []
        for piece in _timed(self.engines.chat.stream_reply(messages, options, audio=audio), timer, "llm"):
            if not pieces:
                timer.add("llm_ttft", timer.elapsed() - began)
            pieces.append(piece)
            yield ReplyDeltaEvent(text=piece, turn=number).model_dump()
        turns.append(Turn(turn=number, segments=answering, reply="".join(pieces).strip()))


def _concat(blocks: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(blocks) if blocks else None


def _fixed_windows(audio: np.ndarray | None, window_s: float) -> Iterator[SpeechSegment]:
    """VAD disabled: the whole audio in model-sized windows, nothing dropped."""
    if audio is None:
        return
    step = int(window_s * SAMPLE_RATE)
    for start in range(0, len(audio), step):
        piece = audio[start : start + step]
        yield SpeechSegment(start, start + len(piece), piece)


def _timed(items: Iterable[Any], timer: StageTimer, stage: str) -> Iterator[Any]:
    """Charge the time spent producing each item to `stage` (the consumer's time is not counted)."""
    iterator = iter(items)
    while True:
        with timer.stage(stage):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
