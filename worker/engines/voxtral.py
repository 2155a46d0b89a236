"""Voxtral (mistralai/Voxtral-Mini-3B-2507) through transformers: one loaded model is both
the ASR engine (transcription requests) and the chat engine (chat template, audio allowed).

torch and transformers are imported inside `load`, so this module imports without them.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from worker.engines.base import ChatMessage, EngineInfo, GenerationOptions, Transcript
from worker.errors import EngineLoadError, JobError
from worker.settings import Settings

SAMPLE_RATE = 16_000
LANGUAGES = frozenset({"en", "es", "fr", "pt", "hi", "de", "nl", "it"})  # Voxtral's model card
PIECE_SAMPLES = 30 * SAMPLE_RATE  # the encoder window: longer segments are split, never cut
# Transcription budget: generous for fast speech in token-hungry languages (Hindi), and greedy
# decoding stops at EOS long before it on real weights.
ASR_TOKENS_PER_SECOND = 16
ASR_MIN_TOKENS = 32
# RunPod "cached models": runpod-python's rp_model_cache.py template, and the documented HF layout.
RUNPOD_CACHE_TEMPLATE = "/runpod/cache/{model}/{revision}"
RUNPOD_HF_HUB = Path("/runpod-volume/huggingface-cache/hub")
_LANG_PREFIX = re.compile(r"^\s*lang:([a-z]{2})")


def _split_revision(spec: str) -> tuple[str, str | None]:
    """'org/name:rev' -> ('org/name', 'rev'), the same syntax rp_model_cache.py parses."""
    model, sep, revision = spec.rpartition(":")
    return (model, revision) if sep and "/" not in revision else (spec, None)


def _runpod_cached(repo_id: str, revision: str | None) -> Path | None:
    candidates = [Path(RUNPOD_CACHE_TEMPLATE.format(model=repo_id, revision=revision or "main"))]
    repo_dir = RUNPOD_HF_HUB / f"models--{repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / (revision or "main")
    if ref.is_file():  # a branch or tag name -> its commit's snapshot
        candidates.append(repo_dir / "snapshots" / ref.read_text().strip())
    elif revision:  # a commit hash
        candidates.append(repo_dir / "snapshots" / revision)
    else:  # no refs written: the newest snapshot
        candidates += sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def _resolve(spec: str) -> tuple[str, str | None, str]:
    """Where to load from: (local dir or hub id, revision, source)."""
    expanded = Path(spec).expanduser()
    if expanded.is_dir():
        return str(expanded), None, "local"
    if expanded.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        raise EngineLoadError(
            f"Voxtral model directory {spec} does not exist: set WORKER_VOXTRAL_MODEL to a directory holding "
            "the saved model and processor, or to a hub id such as mistralai/Voxtral-Mini-3B-2507."
        )
    repo_id, revision = _split_revision(spec)
    cached = _runpod_cached(repo_id, revision)
    return (str(cached), None, "runpod-cache") if cached else (repo_id, revision, "hub")


def _choose_attention(setting: str, torch: Any, dtype: Any) -> tuple[str, str]:
    if setting in ("sdpa", "eager"):
        return setting, f"{setting}: set by WORKER_VOXTRAL_ATTENTION"
    if not torch.cuda.is_available():
        return "sdpa", "sdpa: no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return "sdpa", f"sdpa: GPU capability {major}.{minor} < 8.0 (flash-attn needs Ampere or newer)"
    if dtype not in (torch.float16, torch.bfloat16):
        return "sdpa", f"sdpa: flash-attn needs float16/bfloat16, dtype is {dtype}"
    try:
        import flash_attn
    except Exception as exc:  # noqa: BLE001 -- broken builds raise OSError etc., not only ImportError
        return "sdpa", f"sdpa: flash_attn not importable ({type(exc).__name__}: {exc})"
    return (
        "flash_attention_2",
        f"flash_attention_2: GPU capability {major}.{minor}, flash_attn {flash_attn.__version__}",
    )


def _wav_base64(audio: np.ndarray) -> str:
    # Chat content takes audio only as path/url/base64, not as an array.
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(audio, dtype=np.float32), SAMPLE_RATE, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class VoxtralEngine:
    """AsrEngine and ChatEngine over one Voxtral model; `generate` is serialised by a lock."""

    languages: frozenset[str] | None = LANGUAGES
    accepts_audio = True

    def __init__(self, model: Any, processor: Any, settings: Settings, info: EngineInfo, compile_kwargs: dict) -> None:
        import torch

        self._torch, self._model, self._processor = torch, model, processor
        self._model_id = settings.voxtral_model
        self._max_batch = settings.voxtral_max_batch
        self._compile_kwargs = compile_kwargs  # static cache + CompileConfig, or {} for eager
        self._lock = threading.Lock()  # one GPU, one model: one generate at a time
        self.info = info

    # ----------------------------------------------------------------- load
    @classmethod
    def load(cls, settings: Settings) -> VoxtralEngine:
        started = time.perf_counter()
        try:
            import torch
            import transformers
            from transformers import AutoProcessor, CompileConfig, VoxtralForConditionalGeneration
        except ImportError as exc:
            raise EngineLoadError(
                f"Voxtral needs torch, transformers and mistral-common[audio] ({exc}): "
                "pip install -r builder/requirements-voxtral.txt plus torch"
            ) from exc

        source, revision, origin = _resolve(settings.voxtral_model)
        cuda = torch.cuda.is_available()
        device = torch.device("cuda:0" if cuda else "cpu")
        dtype = getattr(torch, settings.voxtral_dtype) if settings.voxtral_dtype != "auto" else (
            torch.bfloat16 if cuda else torch.float32)  # fmt: skip
        attention, attention_reason = _choose_attention(settings.voxtral_attention, torch, dtype)
        hub: dict[str, Any] = {
            "cache_dir": settings.hf_cache_dir,
            "revision": revision,
            "token": os.environ.get("HF_TOKEN") or None,
            "local_files_only": settings.voxtral_local_files_only or origin != "hub",
        }
        if not cuda:
            torch.set_num_threads(settings.cpu_threads)
        try:
            processor = AutoProcessor.from_pretrained(source, **hub)
            load_kwargs: dict[str, Any] = {"dtype": dtype, **hub}
            if cuda and importlib.util.find_spec("accelerate"):
                load_kwargs["device_map"] = {"": device}  # straight to the GPU, no host copy
            try:
                model = VoxtralForConditionalGeneration.from_pretrained(
                    source, attn_implementation=attention, **load_kwargs
                )
            except ImportError as exc:  # flash-attn present but unusable: never fatal
                attention, attention_reason = "sdpa", f"sdpa: flash_attention_2 failed to load ({exc})"
                model = VoxtralForConditionalGeneration.from_pretrained(
                    source, attn_implementation="sdpa", **load_kwargs
                )
            model = model.to(device).eval()  # type: ignore[arg-type]
        except Exception as exc:
            raise EngineLoadError(
                f"Voxtral model {settings.voxtral_model!r} (from {origin}: {source}) could not be loaded: "
                f"{type(exc).__name__}: {str(exc).rstrip('.')}. The directory must hold config.json, the "
                "*.safetensors weights, tekken.json and processor_config.json saved together; re-download "
                "the model, or check WORKER_VOXTRAL_MODEL, WORKER_HF_CACHE_DIR and HF_TOKEN."
            ) from exc
        if type(processor.tokenizer).__name__ != "MistralCommonBackend":
            raise EngineLoadError(
                f"Voxtral processor in {source} loaded a {type(processor.tokenizer).__name__} tokenizer, not "
                "MistralCommonBackend: keep config.json in the same directory as tekken.json, and install "
                "mistral-common[audio]."
            )

        compile_kwargs: dict[str, Any] = {}
        compile_reason = "eager: disabled by WORKER_VOXTRAL_COMPILE"
        if settings.voxtral_compile:
            # transformers' own path: static KV cache + compiled decode step, dynamic shapes so
            # new prompt lengths / budgets do not recompile (batch 1 and >1 are two graphs).
            config = CompileConfig(mode=settings.voxtral_compile_mode, dynamic=True)
            if not cuda:  # generate() auto-compiles only on accelerators unless this (private) flag is set
                config._compile_all_devices = True  # type: ignore[assignment]
            compile_kwargs = {"cache_implementation": "static", "compile_config": config}
            compile_reason = (
                f"compiled: transformers static cache + torch.compile(mode={settings.voxtral_compile_mode!r})"
            )

        info = EngineInfo(
            name="voxtral",
            model=settings.voxtral_model,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            attention=attention,
            compiled=bool(compile_kwargs),
            details={
                "source": origin,
                "path": source,
                "attention_reason": attention_reason,
                "compile_reason": compile_reason,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        )
        engine = cls(model, processor, settings, info, compile_kwargs)
        if compile_kwargs:
            engine._probe_compile()  # fail over to eager now rather than in the first job
        engine.info.details["load_seconds"] = round(time.perf_counter() - started, 2)
        return engine

    def _probe_compile(self) -> None:
        inputs = self._processor.apply_chat_template([{"role": "user", "content": "Hi"}], return_tensors="pt")
        with self._lock:
            self._generate(inputs, max_new_tokens=3, do_sample=False)

    def warmup(self) -> None:
        """Run the shapes real jobs have (batch 1 and 2, chat) so compiles happen before traffic."""
        tone = (0.1 * np.sin(np.arange(SAMPLE_RATE) * 0.05)).astype(np.float32)
        self.transcribe([tone], "en")
        self.transcribe([tone, tone], None)
        "".join(self.stream_reply([ChatMessage("user", "Hi")], GenerationOptions(max_new_tokens=4)))

    # ------------------------------------------------------------- generate
    def _generate(self, inputs: Any, **kwargs: Any) -> Any:
        """model.generate, compiled if enabled; a compile failure switches to eager for good.

        Call with the lock held."""
        inputs = inputs.to(self._model.device, dtype=self._model.dtype)  # casts only float tensors
        if self._compile_kwargs:
            try:
                return self._model.generate(**inputs, **kwargs, **self._compile_kwargs)
            except self._torch._dynamo.exc.TorchDynamoException as exc:
                self._compile_kwargs = {}
                if streamer := kwargs.get("streamer"):  # compile fails at the 2nd token: restart the stream
                    streamer.token_cache, streamer.print_len, streamer.next_tokens_are_prompt = [], 0, True
                reason = f"eager: torch.compile failed ({type(exc).__name__}: {str(exc)[:300]})"
                self.info = replace(self.info, compiled=False, details={**self.info.details, "compile_reason": reason})
        return self._model.generate(**inputs, **kwargs)

    def _record_tokens(self, count: int) -> None:
        self.info.details["last_generated_tokens"] = count

    # ------------------------------------------------------------------ ASR
    def transcribe(self, segments: Sequence[np.ndarray], language: str | None) -> list[Transcript]:
        if language is not None:
            language = language.lower()
            if language not in LANGUAGES:
                raise JobError(
                    f"Voxtral cannot transcribe language {language!r}; use one of {', '.join(sorted(LANGUAGES))} "
                    "or omit the language to auto-detect it."
                )
        # Every segment becomes <=30 s pieces of equal length; pieces go through generate in
        # batches of voxtral_max_batch (one batch for a usual call), then rejoin per segment.
        pieces: list[tuple[int, np.ndarray]] = []
        for index, segment in enumerate(segments):
            audio = np.asarray(segment, dtype=np.float32).reshape(-1)
            count = math.ceil(audio.size / PIECE_SAMPLES)
            pieces += [(index, piece) for piece in (np.array_split(audio, count) if count else [])]
        texts: list[list[str]] = [[] for _ in segments]
        tokens = [0] * len(segments)
        detected: list[str | None] = [language] * len(segments)
        tokenizer = self._processor.tokenizer
        stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        for start in range(0, len(pieces), self._max_batch):
            batch = pieces[start : start + self._max_batch]
            inputs = self._processor.apply_transcription_request(
                audio=[p for _, p in batch], model_id=self._model_id, language=language,
                sampling_rate=SAMPLE_RATE, format=["wav"] * len(batch),
            )  # fmt: skip
            budget = ASR_MIN_TOKENS + math.ceil(ASR_TOKENS_PER_SECOND * max(p.size for _, p in batch) / SAMPLE_RATE)
            with self._lock:
                output = self._generate(inputs, max_new_tokens=budget, do_sample=False)
            for (index, _), row in zip(batch, output[:, inputs["input_ids"].shape[1] :].tolist()):
                ids = row[: next((i for i, t in enumerate(row) if t in stops), len(row))]
                tokens[index] += len(ids)
                # Without a forced language the model may write "lang:xx" first; plain decode strips it.
                found = _LANG_PREFIX.match(tokenizer.decode(ids, skip_special_tokens=False))
                detected[index] = detected[index] or (found.group(1) if found else None)
                texts[index].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        if pieces:
            self._record_tokens(sum(tokens))
        return [
            Transcript(text=" ".join(t for t in parts if t), language=lang, tokens=count)
            for parts, lang, count in zip(texts, detected, tokens)
        ]

    # ----------------------------------------------------------------- chat
    def _conversation(self, messages: Sequence[ChatMessage], audio: np.ndarray | None) -> list[dict[str, Any]]:
        # Voxtral-Mini does not support system prompts: fold them into the first user turn.
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        turns: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        if not turns or turns[-1]["role"] != "user":
            if audio is None:
                raise JobError("The conversation must end with a user message.")
            turns.append({"role": "user", "content": ""})  # the audio is the user's turn
        first_user = next(t for t in turns if t["role"] == "user")
        if system:
            first_user["content"] = f"{system}\n\n{first_user['content']}".strip()
        if audio is not None:
            text = turns[-1]["content"]
            turns[-1]["content"] = [{"type": "audio", "base64": _wav_base64(audio)}] + (
                [{"type": "text", "text": text}] if text else []
            )
        return turns

    def stream_reply(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, audio: np.ndarray | None = None
    ) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self._processor.apply_chat_template(self._conversation(messages, audio), return_tensors="pt")
        sampling: dict[str, Any] = {"do_sample": False}
        if options.temperature > 0:
            sampling = {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p}
        cancel = threading.Event()  # set when the consumer goes away: stops generate at the next token

        def cancelled(input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return self._torch.full((input_ids.shape[0],), cancel.is_set(), device=input_ids.device)

        # A plain Lock, not an RLock: the consumer may resume this generator from another thread.
        with self._lock:
            streamer = TextIteratorStreamer(self._processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
            result: dict[str, Any] = {}

            def run() -> None:
                try:
                    result["output"] = self._generate(
                        inputs, streamer=streamer, max_new_tokens=options.max_new_tokens,
                        stopping_criteria=StoppingCriteriaList([cancelled]), **sampling,
                    )  # fmt: skip
                except BaseException as exc:  # noqa: BLE001 -- re-raised in the consumer's thread
                    result["error"] = exc
                    streamer.end()  # unblock the consumer

            thread = threading.Thread(target=run, name="voxtral-generate", daemon=True)
            thread.start()
            try:
                yield from streamer
            finally:
                cancel.set()  # no-op when generation already finished
                thread.join()
                if "output" in result:
                    self._record_tokens(result["output"].shape[1] - inputs["input_ids"].shape[1])
            if "error" in result:
                raise result["error"]
