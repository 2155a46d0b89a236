"""Engine selection: one setting (WORKER_ENGINE) decides, and the reason is reported."""

from __future__ import annotations

import importlib.util
import logging

from worker.engines.base import Engines
from worker.errors import EngineLoadError
from worker.settings import Settings

log = logging.getLogger(__name__)


def _cuda_available() -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    # Importing torch costs ~1.4 s of a CPU cold start (bench/cold_start.py); CTranslate2's device
    # count is cheap and sees the same driver, so torch is imported only when a GPU exists.
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        return False, "no CUDA device"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"CUDA device {torch.cuda.get_device_name(0)}"


def load_engines(settings: Settings) -> Engines:
    """`voxtral`: Voxtral or fail. `embedded`: the CPU engines. `auto`: Voxtral when CUDA is there and it loads."""
    if settings.engine == "voxtral":
        return _load_voxtral(settings, reason="WORKER_ENGINE=voxtral")
    if settings.engine == "embedded":
        return _load_embedded(settings, reason="WORKER_ENGINE=embedded")
    cuda, why = _cuda_available()
    if not cuda:
        return _load_embedded(settings, reason=f"auto: embedded CPU engines ({why})")
    try:
        return _load_voxtral(settings, reason=f"auto: Voxtral on {why}")
    except EngineLoadError as err:
        log.warning("Voxtral did not load, falling back to the embedded engines: %s", err)
        return _load_embedded(settings, reason=f"auto: embedded CPU engines (Voxtral did not load: {err})")


def _load_voxtral(settings: Settings, reason: str) -> Engines:
    from worker.engines.voxtral import VoxtralEngine

    engine = VoxtralEngine.load(settings)
    return Engines(asr=engine, chat=engine, reason=reason)


def _load_embedded(settings: Settings, reason: str) -> Engines:
    from worker.engines.llama import LlamaCppEngine
    from worker.engines.whisper import FasterWhisperEngine

    asr = FasterWhisperEngine(
        settings.asr_model, settings.asr_compute_type, settings.cpu_threads, settings.asr_beam_size
    )
    chat = LlamaCppEngine(settings.llm_model_path, settings.llm_context_tokens, settings.cpu_threads)
    return Engines(asr=asr, chat=chat, reason=reason)
