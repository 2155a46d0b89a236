"""The job contract: what a job's input may hold and the events the handler yields.

Validation is strict (no type coercion, unknown fields rejected) so a caller's
mistake is named instead of silently reinterpreted.
"""

from __future__ import annotations

import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.errors import JobError
from worker.settings import get_settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _setting(name: str) -> Any:
    return lambda: getattr(get_settings(), name)


class VadOptions(_Strict):
    enabled: bool = True
    threshold: float = Field(default_factory=_setting("vad_threshold"), ge=0.0, le=1.0)
    min_speech_ms: int = Field(default_factory=_setting("vad_min_speech_ms"), ge=0, le=10_000)
    min_silence_ms: int = Field(default_factory=_setting("vad_min_silence_ms"), ge=0, le=10_000)
    speech_pad_ms: int = Field(default_factory=_setting("vad_speech_pad_ms"), ge=0, le=2_000)


class HistoryMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class ChunkFormat(_Strict):
    """How to read `chunks`: raw PCM (needs sample_rate, channels) or an encoded stream cut into pieces."""

    encoding: Literal["pcm_s16le", "f32le", "encoded"]
    sample_rate: int | None = Field(default=None, ge=8_000, le=192_000)
    channels: int = Field(default=1, ge=1, le=8)

    @model_validator(mode="after")
    def _pcm_needs_rate(self) -> ChunkFormat:
        if self.encoding != "encoded" and self.sample_rate is None:
            raise ValueError(f"chunk_format.sample_rate is required for {self.encoding} chunks")
        return self


AUDIO_SOURCES = ("audio_url", "audio_path", "audio_base64", "chunks")


class JobInput(_Strict):
    audio_url: str | None = Field(default=None, min_length=1)
    audio_path: str | None = Field(default=None, min_length=1)
    audio_base64: str | None = Field(default=None, min_length=1)
    chunks: list[str] | None = Field(default=None, min_length=1)  # ordered base64 pieces of one stream
    chunk_format: ChunkFormat | None = None

    task: Literal["transcribe", "reply"] = Field(default_factory=_setting("default_task"))
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    system_prompt: str | None = None
    history: list[HistoryMessage] = Field(default_factory=list)
    max_new_tokens: int = Field(default_factory=_setting("default_max_new_tokens"), ge=1)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    reply_with_audio: bool = False  # give the chat model the audio itself (engines that accept audio)
    reply_mode: Literal["end", "each_utterance"] = Field(default_factory=_setting("default_reply_mode"))
    vad: VadOptions = Field(default_factory=VadOptions)

    @model_validator(mode="after")
    def _check(self) -> JobInput:
        given = [name for name in AUDIO_SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one audio source of {', '.join(AUDIO_SOURCES)} (found: {found})")
        if (self.chunks is None) != (self.chunk_format is None):
            raise ValueError("chunks and chunk_format go together: give both or neither")
        settings = get_settings()
        if self.max_new_tokens > settings.max_new_tokens_limit:
            raise ValueError(
                f"max_new_tokens={_short(self.max_new_tokens)} is over the limit of "
                f"{settings.max_new_tokens_limit} (WORKER_MAX_NEW_TOKENS_LIMIT)"
            )
        if len(self.history) > settings.max_history_messages:
            raise ValueError(
                f"history has {len(self.history)} messages; the limit is "
                f"{settings.max_history_messages} (WORKER_MAX_HISTORY_MESSAGES)"
            )
        texts = [("system_prompt", self.system_prompt or "")]
        texts += [(f"history[{i}].content", m.content) for i, m in enumerate(self.history)]
        for where, text in texts:
            if len(text) > settings.max_text_chars:
                raise ValueError(
                    f"{where} has {len(text)} characters; the limit is "
                    f"{settings.max_text_chars} (WORKER_MAX_TEXT_CHARS)"
                )
        return self

    @property
    def audio_source(self) -> tuple[str, Any]:
        """(field name, value) of the one audio source given."""
        name = next(n for n in AUDIO_SOURCES if getattr(self, n) is not None)
        return name, getattr(self, name)


def parse_job_input(raw: Any) -> JobInput:
    """Validate a job's `input`; raises JobError whose message names every bad field."""
    if not isinstance(raw, dict):
        raise JobError(f"job input must be a JSON object, got {type(raw).__name__}")
    try:
        return JobInput.model_validate(raw)
    except ValidationError as err:
        raise JobError(describe_validation_error(err)) from None


MAX_PROBLEMS_LISTED = 10  # a hostile input can hold thousands of bad fields; the message stays short


def describe_validation_error(err: ValidationError) -> str:
    problems = []
    errors = err.errors(include_url=False)
    for e in errors[:MAX_PROBLEMS_LISTED]:
        where = _cut(".".join(str(p) for p in e["loc"]) or "input", 80)  # a field name can be huge too
        if e["type"] == "extra_forbidden":
            problems.append(f"'{where}' is not a known field")
        else:
            message = e["msg"].removeprefix("Value error, ")
            got = "" if e["type"] == "value_error" else f" (got {_short(e.get('input'))})"
            problems.append(f"'{where}': {message}{got}" if where != "input" else message + got)
    if len(errors) > MAX_PROBLEMS_LISTED:
        problems.append(f"and {len(errors) - MAX_PROBLEMS_LISTED} more problem(s)")
    return "invalid input: " + "; ".join(problems)


# Bounded repr: plain repr() of a deeply nested value recurses past the interpreter's limit, and of a
# huge one builds the whole text just to cut it.
_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 40, 40, 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 3


def _short(value: Any, limit: int = 40) -> str:
    try:
        return _cut(_REPR.repr(value), limit)
    except (ValueError, RecursionError):  # e.g. an int past Python's 4300-digit str() limit
        return f"{type(value).__name__} too large to show"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- events the handler yields (documented in the README) ---


class SegmentEvent(BaseModel):
    type: Literal["segment"] = "segment"
    index: int
    start: float  # seconds from the start of the audio
    end: float
    text: str
    language: str | None = None


class ReplyDeltaEvent(BaseModel):
    type: Literal["reply_delta"] = "reply_delta"
    text: str
    turn: int = 0  # which reply: always 0 with reply_mode "end"; one per utterance with "each_utterance"


class Turn(BaseModel):
    turn: int
    segments: list[int]  # indexes of the segments this reply answers
    reply: str


class ResultEvent(BaseModel):
    type: Literal["result"] = "result"
    transcript: str
    segments: list[SegmentEvent]
    reply: str | None  # the reply; with reply_mode "each_utterance", every turn's reply joined by blank lines
    turns: list[Turn] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    metadata: dict[str, Any]
