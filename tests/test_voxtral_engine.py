"""VoxtralEngine on a tiny, randomly initialised Voxtral with real (espeak-ng) speech.

The weights are random, so the text is gibberish: these tests assert that the real
transformers / mistral-common code path ran — token counts, batching into one generate,
stream event shapes, EngineInfo fields, error types and messages — never what was said.
The tiny model may only emit a-z and space (see tests/tiny_voxtral.py), so it never stops
early and every generation runs to its token budget, which makes counts exact.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.speech import UTTERANCES, read_wav_16k, synthesize
from worker.engines import voxtral
from worker.engines.base import AsrEngine, ChatEngine, ChatMessage, GenerationOptions
from worker.engines.voxtral import ASR_MIN_TOKENS, ASR_TOKENS_PER_SECOND, VoxtralEngine
from worker.errors import EngineLoadError, JobError
from worker.settings import Settings

SR = 16_000


def _settings(model_dir: Path, **overrides: Any) -> Settings:
    # One torch thread: the tiny model gains nothing from two, and OpenMP spinning degrades badly
    # when CI shares the 2 cores with other work.
    values: dict[str, Any] = {"voxtral_local_files_only": True, "voxtral_compile": False, "cpu_threads": 1}
    return Settings(voxtral_model=str(model_dir), **{**values, **overrides})


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Real synthetic speech: espeak-ng + sox WAVs, decoded with PyAV and resampled to 16 kHz."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are required for the speech tests: apt-get install espeak-ng sox")
    directory = tmp_path_factory.mktemp("voxtral-speech")
    return [read_wav_16k(synthesize(text, directory / f"speech{i}.wav")) for i, text in enumerate(UTTERANCES)]


@pytest.fixture(scope="session")
def engine(model_dir: Path) -> VoxtralEngine:
    return VoxtralEngine.load(_settings(model_dir))


@pytest.fixture
def generate_calls(engine: VoxtralEngine, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every model.generate call's kwargs."""
    calls: list[dict[str, Any]] = []
    real = engine._model.generate

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(engine._model, "generate", spy)
    return calls


def _budget(samples: int) -> int:
    return ASR_MIN_TOKENS + int(np.ceil(ASR_TOKENS_PER_SECOND * samples / SR))


def test_load_on_cpu_reports_sdpa_eager_and_numbers(engine: VoxtralEngine) -> None:
    assert isinstance(engine, AsrEngine) and isinstance(engine, ChatEngine)
    info = engine.info
    assert (info.name, info.device, info.dtype, info.attention, info.compiled) == (
        "voxtral", "cpu", "float32", "sdpa", False)  # fmt: skip
    assert info.details["attention_reason"] == "sdpa: no CUDA device"
    assert info.details["compile_reason"].startswith("eager: disabled")
    assert info.details["source"] == "local" and info.details["load_seconds"] > 0
    assert engine.languages == frozenset({"en", "es", "fr", "pt", "hi", "de", "nl", "it"})


def test_transcribe_batches_all_segments_in_one_generate(
    engine: VoxtralEngine, speech: list[np.ndarray], generate_calls: list[dict[str, Any]]
) -> None:
    long = np.tile(speech[0], int(np.ceil(31 * SR / speech[0].size)))[: 31 * SR]  # 31 s -> two 15.5 s pieces
    segments = [*speech, long]
    transcripts = engine.transcribe(segments, "en")

    assert len(generate_calls) == 1
    assert generate_calls[0]["input_features"].shape[0] == len(speech) + 2  # one 30 s window per piece
    assert len(transcripts) == len(segments)
    budget = _budget(long.size // 2)  # the longest piece sets the batch's budget
    assert [t.tokens for t in transcripts] == [budget] * len(speech) + [2 * budget]
    assert all(t.language == "en" and t.text for t in transcripts)
    assert engine.info.details["last_generated_tokens"] == (len(speech) + 2) * budget


def test_transcribe_splits_large_calls_into_max_batch(
    engine: VoxtralEngine, speech: list[np.ndarray], generate_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(engine, "_max_batch", 2)
    transcripts = engine.transcribe(speech, "fr")
    assert [call["input_ids"].shape[0] for call in generate_calls] == [2, 1]
    first = _budget(max(speech[0].size, speech[1].size))
    assert [t.tokens for t in transcripts] == [first, first, _budget(speech[2].size)]
    assert [t.language for t in transcripts] == ["fr"] * 3


def test_transcribe_auto_language_and_empty_segment(engine: VoxtralEngine, speech: list[np.ndarray]) -> None:
    transcripts = engine.transcribe([speech[1], np.zeros(0, np.float32)], None)
    assert transcripts[0].tokens == _budget(speech[1].size) and transcripts[0].text
    assert transcripts[1].text == "" and transcripts[1].tokens == 0


def test_unsupported_language_names_allowed_set(engine: VoxtralEngine, speech: list[np.ndarray]) -> None:
    with pytest.raises(JobError, match="de, en, es, fr, hi, it, nl, pt"):
        engine.transcribe([speech[0]], "ja")


def test_chat_stream_deltas_concatenate_to_full_text(engine: VoxtralEngine) -> None:
    messages = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is speech recognition?")]
    pieces = list(engine.stream_reply(messages, GenerationOptions(max_new_tokens=24, temperature=0.0)))

    assert len(pieces) > 1
    assert engine.info.details["last_generated_tokens"] == 24
    # The same greedy generation without streaming, from the folded conversation.
    inputs = engine._processor.apply_chat_template(engine._conversation(messages, None), return_tensors="pt")
    assert "Answer briefly." in engine._processor.tokenizer.decode(inputs["input_ids"][0])
    output = engine._model.generate(**inputs, max_new_tokens=24, do_sample=False)
    full = engine._processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "".join(pieces) == full


def test_chat_with_audio_and_sampling(
    engine: VoxtralEngine, speech: list[np.ndarray], generate_calls: list[dict[str, Any]]
) -> None:
    messages = [ChatMessage("user", "What did I say?")]
    options = GenerationOptions(max_new_tokens=12, temperature=0.7, top_p=0.9)
    text = "".join(engine.stream_reply(messages, options, audio=speech[2]))

    kwargs = generate_calls[0]
    assert kwargs["input_features"].shape == (1, 128, 3000)
    assert int((kwargs["input_ids"] == 24).sum()) == 375  # one 30 s window of audio tokens
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 0.7
    assert text.strip() and engine.info.details["last_generated_tokens"] == 12


def test_closing_the_stream_stops_generation(engine: VoxtralEngine) -> None:
    stream = engine.stream_reply([ChatMessage("user", "Talk.")], GenerationOptions(max_new_tokens=2000, temperature=0))
    next(stream)
    stream.close()  # joins the generate thread and releases the lock
    assert engine.info.details["last_generated_tokens"] < 2000
    assert len(list(engine.stream_reply([ChatMessage("user", "Hi")], GenerationOptions(max_new_tokens=3)))) >= 1


def test_warmup_runs_every_job_shape(engine: VoxtralEngine, generate_calls: list[dict[str, Any]]) -> None:
    engine.warmup()
    assert [call["input_ids"].shape[0] for call in generate_calls] == [1, 2, 1]
    assert "input_features" not in generate_calls[2]  # the last is a text-only chat


def test_compile_failure_falls_back_to_eager(
    model_dir: Path, speech: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_compile(*args: Any, **kwargs: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise torch._dynamo.exc.BackendCompilerFailed("inductor", RuntimeError("no compiler"), None)

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    engine = VoxtralEngine.load(_settings(model_dir, voxtral_compile=True))
    assert engine.info.compiled is False
    assert engine.info.details["compile_reason"].startswith("eager: torch.compile failed (BackendCompilerFailed")
    assert engine.transcribe([speech[0]], "en")[0].tokens == _budget(speech[0].size)


def test_compiled_engine_generates(model_dir: Path) -> None:
    """Real torch.compile (inductor, CPU): the load probe compiles, then one short chat runs compiled."""
    engine = VoxtralEngine.load(_settings(model_dir, voxtral_compile=True))
    assert engine.info.compiled is True, engine.info.details["compile_reason"]
    assert engine.info.details["compile_reason"].startswith("compiled: transformers static cache")
    assert hasattr(engine._model, "_compiled_call")  # generate() took the compiled path
    pieces = list(engine.stream_reply([ChatMessage("user", "Hello there")], GenerationOptions(max_new_tokens=8)))
    assert pieces and engine.info.details["last_generated_tokens"] == 8 and engine.info.compiled is True


def test_missing_dir_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="does not exist"):
        VoxtralEngine.load(_settings(tmp_path / "nowhere"))


@pytest.mark.parametrize("damage", ["truncated config.json", "deleted weights"])
def test_corrupt_dir_is_a_load_error(model_dir: Path, tmp_path: Path, damage: str) -> None:
    broken = shutil.copytree(model_dir, tmp_path / "broken")
    if damage == "deleted weights":
        (broken / "model.safetensors").unlink()
    else:
        config = broken / "config.json"
        config.write_text(config.read_text()[:40])
    with pytest.raises(EngineLoadError, match="could not be loaded.*config.json, the \\*.safetensors weights"):
        VoxtralEngine.load(_settings(broken))


def test_hub_id_prefers_runpod_cached_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hub" / "models--mistralai--Voxtral-Mini-3B-2507" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123\n")
    monkeypatch.setattr(voxtral, "RUNPOD_HF_HUB", tmp_path / "hub")
    monkeypatch.setattr(voxtral, "RUNPOD_CACHE_TEMPLATE", str(tmp_path / "rp" / "{model}" / "{revision}"))
    assert voxtral._resolve("mistralai/Voxtral-Mini-3B-2507") == (str(snapshot), None, "runpod-cache")

    rp_dir = tmp_path / "rp" / "mistralai" / "Voxtral-Mini-3B-2507" / "v2"
    rp_dir.mkdir(parents=True)
    (rp_dir / "config.json").write_text("{}")
    assert voxtral._resolve("mistralai/Voxtral-Mini-3B-2507:v2") == (str(rp_dir), None, "runpod-cache")
    assert voxtral._resolve("mistralai/Other") == ("mistralai/Other", None, "hub")


def test_missing_runtime_is_a_load_error(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(EngineLoadError, match="needs torch, transformers and mistral-common"):
        VoxtralEngine.load(_settings(model_dir))


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), "sdpa: GPU capability 7.5 < 8.0"), ((9, 0), "sdpa: flash_attn not importable")],
)
def test_attention_falls_back_to_sdpa_on_gpus_without_flash_attn(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str
) -> None:
    from types import SimpleNamespace

    cuda = SimpleNamespace(is_available=lambda: True, get_device_capability=lambda: capability)
    fake_torch = SimpleNamespace(cuda=cuda, float16=torch.float16, bfloat16=torch.bfloat16)
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    attention, reason = voxtral._choose_attention("auto", fake_torch, torch.bfloat16)
    assert attention == "sdpa" and reason.startswith(expected)
