"""Shared fixtures: real speech files and the real worker (embedded engines, loaded once per session)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.speech import FOUR_UTTERANCES, UTTERANCES, synthesize, utterances_ssml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def three_utterances_wav(speech_dir: Path) -> Path:
    """Three English sentences separated by 0.9 s pauses, 16 kHz mono WAV."""
    return synthesize(utterances_ssml(UTTERANCES), speech_dir / "three.wav")


@pytest.fixture(scope="session")
def four_utterances_wav(speech_dir: Path) -> Path:
    """Four other sentences separated by 0.8 s pauses, 16 kHz mono WAV."""
    return synthesize(utterances_ssml(FOUR_UTTERANCES, pause_ms=800), speech_dir / "four.wav")


@pytest.fixture(scope="session")
def handler_module() -> Any:
    """The real handler module: importing it loads and warms the embedded engines."""
    return importlib.import_module("handler")


@pytest.fixture(scope="session")
def run_job(handler_module: Any):
    """Run one job through the real generator handler; returns the list of events."""

    def run(job_input: Any, job_id: str = "test") -> list[dict[str, Any]]:
        return list(handler_module.handler({"id": job_id, "input": job_input}))

    return run


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, randomly initialised Voxtral saved with save_pretrained (needs torch + transformers)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_voxtral import build_tiny_voxtral

    return build_tiny_voxtral(tmp_path_factory.mktemp("voxtral") / "tiny")
