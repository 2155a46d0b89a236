"""VAD -> ASR -> LLM over one job's audio, yielding events as soon as each exists.

Audio is decoded block by block and fed to the streaming VAD; each speech
segment is transcribed the moment it closes, so the first segment event can go
out long before a long file has been decoded. The reply streams token by token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.audio_decode import SAMPLE_RATE, SourceFormat, decode_blocks
from worker.audio_source import decode_base64_audio, download_url, read_confined_path
from worker.contract import JobInput, ReplyDeltaEvent, ResultEvent, SegmentEvent
from worker.engines.base import ChatMessage, Engines, GenerationOptions
from worker.errors import JobError
from worker.metrics import StageTimer, WorkerHealth
from worker.settings import Settings
from worker.vad import SileroVad, SpeechSegment, SpeechSegmenter, VadParams


@dataclass
class _Progress:
    """How much audio the job has decoded and the VAD has scanned so far."""

    samples: int = 0
    vad_frames: int = 0


class Pipeline:
    def __init__(self, engines: Engines, vad: SileroVad, settings: Settings, health: WorkerHealth) -> None:
        self.engines = engines
        self.vad = vad
        self.settings = settings
        self.health = health

    def run(self, job: JobInput) -> Iterator[dict[str, Any]]:
        timer = StageTimer()
        self._check_language(job.language)
        with timer.stage("fetch"):
            data = self._fetch(job)
        source = SourceFormat()
        blocks = _timed(decode_blocks(data, self.settings.max_audio_seconds, source), timer, "decode")

        segments: list[SegmentEvent] = []
        segment_timing: list[dict[str, float]] = []
        heard: list[np.ndarray] = []  # kept only when the chat model listens to the audio
        progress = _Progress()
        for speech in self._segment(job, blocks, timer, progress):
            with timer.stage("asr"):
                began = timer.elapsed()
                (transcript,) = self.engines.asr.transcribe([speech.audio], job.language)
                asr_ms = (timer.elapsed() - began) * 1000
            if job.reply_with_audio:
                heard.append(speech.audio)
            if not transcript.text:
                continue
            event = SegmentEvent(
                index=len(segments), start=round(speech.start_s, 3), end=round(speech.end_s, 3),
                text=transcript.text, language=transcript.language,
            )
            segments.append(event)
            segment_timing.append({"index": event.index, "asr_ms": round(asr_ms, 2)})
            timer.mark("first_segment")
            yield event.model_dump()
        audio_seconds = progress.samples / SAMPLE_RATE

        warnings = list(source.warnings)
        transcript_text = " ".join(s.text for s in segments)
        reply: str | None = None
        if not segments:
            warnings.append(
                f"no speech found in {audio_seconds:.2f} s of audio (VAD threshold {job.vad.threshold}); "
                "nothing was transcribed" + (" and no reply was generated" if job.task == "reply" else "")
            )
        elif job.task == "reply":
            audio = np.concatenate(heard) if heard else None
            pieces: list[str] = []
            for piece in self._reply(job, transcript_text, audio, timer):
                pieces.append(piece)
                yield ReplyDeltaEvent(text=piece).model_dump()
            reply = "".join(pieces).strip()
            if not reply:
                warnings.append("the chat model produced an empty reply")

        total = timer.elapsed()
        metadata = {
            "timings_ms": {**timer.milliseconds(), "total_ms": round(total * 1000, 2)},
            "time_to_first_segment_ms": _ms(timer.marks.get("first_segment")),
            "segment_timings": segment_timing,
            "audio_seconds": round(audio_seconds, 3),
            "real_time_factor": round(total / audio_seconds, 4) if audio_seconds else None,
            "source": {"bytes": len(data), "container": source.container, "codec": source.codec,
                       "sample_rate": source.sample_rate, "channels": source.channels},
            "vad": {**job.vad.model_dump(), "frames": progress.vad_frames},
            "task": job.task,
            "health": self.health.snapshot(),
        }
        yield ResultEvent(
            transcript=transcript_text, segments=segments, reply=reply, warnings=warnings, metadata=metadata
        ).model_dump()

    def _check_language(self, language: str | None) -> None:
        allowed = self.engines.asr.languages
        if language is not None and allowed is not None and language not in allowed:
            raise JobError(
                f"language {language!r} is not supported by {self.engines.asr.info.name}; "
                f"use one of {', '.join(sorted(allowed))} or omit it to auto-detect"
            )

    def _fetch(self, job: JobInput) -> bytes:
        s = self.settings
        kind, value = job.audio_source
        if kind == "audio_base64":
            return decode_base64_audio(value, s.max_audio_bytes)
        if kind == "audio_path":
            return read_confined_path(value, s.path_roots, s.max_audio_bytes)
        return download_url(value, s.max_audio_bytes, s.url_timeout_seconds)

    def _segment(
        self, job: JobInput, blocks: Iterable[np.ndarray], timer: StageTimer, progress: _Progress
    ) -> Iterator[SpeechSegment]:
        """Speech segments in time order, each as soon as the VAD closes it."""
        if not job.vad.enabled:
            whole = []
            for block in blocks:
                whole.append(block)
                progress.samples += len(block)
            yield from _fixed_windows(np.concatenate(whole) if whole else np.zeros(0, np.float32),
                                      self.settings.vad_max_segment_seconds)
            return
        v = job.vad
        segmenter = SpeechSegmenter(self.vad, VadParams(
            threshold=v.threshold, min_speech_ms=v.min_speech_ms, min_silence_ms=v.min_silence_ms,
            speech_pad_ms=v.speech_pad_ms, max_segment_s=self.settings.vad_max_segment_seconds,
        ))
        for block in blocks:
            progress.samples += len(block)
            with timer.stage("vad"):
                closed = list(segmenter.feed(block))
            progress.vad_frames = segmenter.frames
            yield from closed
        with timer.stage("vad"):
            closed = list(segmenter.finish())
        yield from closed

    def _reply(self, job: JobInput, transcript: str, audio: np.ndarray | None, timer: StageTimer) -> Iterator[str]:
        messages = [ChatMessage("system", job.system_prompt or self.settings.default_system_prompt)]
        messages += [ChatMessage(m.role, m.content) for m in job.history]
        messages.append(ChatMessage("user", transcript))
        options = GenerationOptions(max_new_tokens=job.max_new_tokens, temperature=job.temperature, top_p=job.top_p)
        began = timer.elapsed()
        stream = self.engines.chat.stream_reply(messages, options, audio=audio)
        first = True
        for piece in _timed(stream, timer, "llm"):
            if first:
                timer.add("llm_ttft", timer.elapsed() - began)
                first = False
            yield piece


def _fixed_windows(audio: np.ndarray, window_s: float) -> Iterator[SpeechSegment]:
    """VAD disabled: the whole audio in model-sized windows, nothing dropped."""
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
