"""The whole worker on the Voxtral engine: a tiny, randomly initialised Voxtral built offline.

Real speech is decoded, segmented by the real VAD and run through the real transformers /
mistral-common code path, but the weights are random, so the text is gibberish. These
tests assert the path ran (event order, token counts, metadata), never what was said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.speech import UTTERANCES
from worker.engines.select import load_engines
from worker.errors import EngineLoadError
from worker.service import Worker
from worker.settings import Settings


@pytest.fixture(scope="module")
def voxtral_worker(model_dir: Path) -> Worker:
    settings = Settings(engine="voxtral", voxtral_model=str(model_dir), voxtral_local_files_only=True,
                        voxtral_compile=False, cpu_threads=1)
    return Worker.start(settings)  # loads, then warms up with a real job


def _run(worker: Worker, **job_input: Any) -> list[dict[str, Any]]:
    return list(worker.handle({"id": "vx", "input": job_input}))


def test_voxtral_serves_both_stages_through_the_pipeline(voxtral_worker: Worker, three_utterances_wav: Path) -> None:
    events = _run(voxtral_worker, audio_path=str(three_utterances_wav), max_new_tokens=6, language="en")
    kinds = [e.get("type") for e in events]
    assert kinds[: len(UTTERANCES)] == ["segment"] * len(UTTERANCES), events[-1]
    assert kinds[len(UTTERANCES) : -1] == ["reply_delta"] * (len(kinds) - len(UTTERANCES) - 1)
    assert kinds.count("reply_delta") >= 2 and kinds[-1] == "result"
    result = events[-1]
    assert len(result["reply"].split()) >= 1
    health = result["metadata"]["health"]
    assert health["asr"]["name"] == health["llm"]["name"] == "voxtral"
    assert health["asr"]["attention"] == "sdpa" and "no CUDA" in health["asr"]["details"]["attention_reason"]
    assert health["engine_selection"] == "WORKER_ENGINE=voxtral"
    assert health["warmup_seconds"] > 0
    assert result["metadata"]["timings_ms"]["llm_ttft_ms"] > 0


def test_voxtral_listens_to_the_audio_in_the_chat_turn(voxtral_worker: Worker, three_utterances_wav: Path) -> None:
    result = _run(voxtral_worker, audio_path=str(three_utterances_wav), max_new_tokens=4, reply_with_audio=True)[-1]
    assert result["type"] == "result" and result["reply"]


def test_voxtral_rejects_languages_it_does_not_speak(voxtral_worker: Worker, three_utterances_wav: Path) -> None:
    error = _run(voxtral_worker, audio_path=str(three_utterances_wav), language="ja")[-1]["error"]
    assert "'ja'" in error and "en" in error and "hi" in error


def test_embedded_engine_refuses_reply_with_audio(run_job, three_utterances_wav: Path) -> None:
    error = run_job({"audio_path": str(three_utterances_wav), "reply_with_audio": True})[-1]["error"]
    assert "reply_with_audio" in error and "Voxtral" in error


def test_engine_selection_on_cpu_explains_itself(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="does not exist"):
        load_engines(Settings(engine="voxtral", voxtral_model=str(tmp_path / "missing"), voxtral_local_files_only=True))
    engines = load_engines(Settings(engine="auto"))
    assert engines.asr.info.name == "faster-whisper" and "no CUDA device" in engines.reason
