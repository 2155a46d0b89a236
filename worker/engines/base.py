"""The small interface every model engine implements.

The pipeline only ever talks to these protocols, so the embedded CPU engines,
Voxtral, and future ones (vLLM, ...) are interchangeable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class EngineInfo:
    """Facts about a loaded engine, reported in every job's health snapshot."""

    name: str  # e.g. "faster-whisper", "llama.cpp", "voxtral"
    model: str  # model id or path
    device: str  # "cpu", "cuda:0", ...
    dtype: str  # "int8", "bfloat16", "q4_1", ...
    attention: str | None = None  # attention implementation, where it applies
    compiled: bool | None = None  # torch.compile state, where it applies
    details: dict[str, Any] = field(default_factory=dict)  # engine-specific (reasons, versions)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None  # detected or forced language code
    tokens: int | None = None  # generated token count, where the engine knows it


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95


@runtime_checkable
class AsrEngine(Protocol):
    info: EngineInfo
    # Language codes the engine accepts; None means it accepts any it can detect.
    languages: frozenset[str] | None

    def transcribe(self, segments: Sequence[np.ndarray], language: str | None) -> list[Transcript]:
        """Transcribe 16 kHz mono float32 segments; one Transcript per segment, in order."""
        ...


@runtime_checkable
class ChatEngine(Protocol):
    info: EngineInfo
    # True when the engine can also listen to the audio itself in the chat turn.
    accepts_audio: bool

    def stream_reply(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        audio: np.ndarray | None = None,
    ) -> Iterator[str]:
        """Yield reply text pieces as they are generated. `audio` (16 kHz mono) only if accepts_audio."""
        ...


@dataclass(frozen=True)
class Engines:
    """What engine selection produced, and why."""

    asr: AsrEngine
    chat: ChatEngine
    reason: str
