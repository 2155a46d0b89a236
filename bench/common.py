"""Shared helpers for the benchmarks: statistics, tables, speech clips, the in-process worker, subprocesses.

The machine is noisy (2 shared cores), so every benchmark reports ratios of things measured
side by side in one run, with the median and the spread (min-max) over repeats.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
SR = 16_000
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The benchmarks compare the worker with its embedded engines called directly, so pin that engine
# (on a GPU, `auto` would pick Voxtral; bench/voxtral.py measures that one). Quiet logs keep tables readable.
BENCH_ENV = {"WORKER_ENGINE": "embedded", "WORKER_LOG_LEVEL": "WARNING"}
for _key, _value in BENCH_ENV.items():
    os.environ.setdefault(_key, _value)

from tests.speech import FOUR_UTTERANCES, read_wav_16k, synthesize, utterances_ssml  # noqa: E402


@dataclass
class Context:
    quick: bool
    jobs: int  # sequential jobs for the memory-growth benchmark
    workdir: Path  # scratch files for this run


@dataclass
class Result:
    name: str
    tables: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)  # {"target", "measured", "limit", "passed"}

    def target(self, what: str, measured: float | None, limit: float, unit: str = "") -> str:
        passed = measured is not None and measured <= limit
        self.targets.append({"target": what, "measured": measured, "limit": limit, "unit": unit, "passed": passed})
        return "PASS" if passed else "FAIL"


# ----------------------------------------------------------------------------- statistics


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of repeated measurements."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return {"n": 0}
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"n": len(xs), "median": statistics.median(xs), "p25": q[0], "p75": q[2], "min": xs[0], "max": xs[-1]}


def fmt(values: Sequence[float] | float | None, digits: int = 2, scale: float = 1.0) -> str:
    """'median (min-max)' for repeats, a plain number for one value."""
    if values is None:
        return "-"
    if isinstance(values, (int, float)):
        return f"{values * scale:.{digits}f}"
    s = spread(values)
    if not s["n"]:
        return "-"
    med = f"{s['median'] * scale:.{digits}f}"
    if s["n"] == 1 or s["min"] == s["max"]:
        return med
    return f"{med} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})"


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [title, line([str(h) for h in headers]), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out += [f"  {n}" for n in notes]
    return "\n".join(out)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def load_average() -> str:
    """1, 5 and 15 minute load averages (other processes share the cores)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def memory_mb(pid: str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values


# ----------------------------------------------------------------------------- speech

# Varied sentences for long audio; several run on for 6-10 s without punctuation, as people talk,
# because espeak pauses at every full stop and comma and the VAD closes an utterance there.
SENTENCES = [
    "The museum opens at nine in the morning and closes late on Fridays so that people who work can visit",
    "Please call me back tomorrow morning.",
    "The train to the coast leaves from platform four every half hour and the trip takes about two hours",
    "What is the weather like in Paris today?",
    "My sister planted tomatoes and beans in the garden behind the house and they grew faster than we expected",
    "Turn left at the bakery and walk two blocks to the library.",
    "We should book the hotel before the prices go up again in the summer and before the good rooms are gone",
    "Can you remind me to buy milk and bread on the way home?",
    "The meeting moved to Thursday afternoon because half of the team is travelling to the conference on Wednesday",
    "The quick brown fox jumps over the lazy dog.",
    "After dinner we walked along the river and watched the boats come back to the harbour as the sun went down",
    "How many kilometres is it from here to the airport?",
]


def write_wav(path: Path, audio: np.ndarray) -> Path:
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(pcm.tobytes())
    return path


@cache
def _sentence_audio(workdir: Path, index: int) -> np.ndarray:
    path = synthesize(SENTENCES[index], workdir / f"sentence{index}.wav", pad_s=0.0)
    return read_wav_16k(path)


def speech_clip(workdir: Path, seconds: float) -> Path:
    """Exactly `seconds` of speech: the sentences in turn, 0.6-1.2 s pauses between, silence to fill the end."""
    path = workdir / f"speech-{seconds:g}s.wav"
    if path.exists():
        return path
    pauses = [0.6, 0.9, 1.2]
    parts, total, i = [np.zeros(int(0.4 * SR), np.float32)], int(0.4 * SR), 0
    target = int(seconds * SR)
    while True:
        sentence = _sentence_audio(workdir, i % len(SENTENCES))
        gap = np.zeros(int(pauses[i % len(pauses)] * SR), np.float32)
        if total + len(sentence) > target - int(0.3 * SR) and i > 0:
            break
        parts += [sentence, gap]
        total += len(sentence) + len(gap)
        i += 1
    audio = np.concatenate(parts)[:target]
    return write_wav(path, np.pad(audio, (0, target - len(audio))))


def four_utterances(workdir: Path) -> Path:
    """The 4-utterance clip of tests/speech.py (~15 s: 1 s pauses, 1 s silence each side)."""
    path = workdir / "four.wav"
    return path if path.exists() else synthesize(utterances_ssml(FOUR_UTTERANCES, pause_ms=1000), path, pad_s=1.0)


def one_utterance(workdir: Path) -> Path:
    path = workdir / "one.wav"
    return path if path.exists() else synthesize("What is the weather like in Paris today?", path)


def audio_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


# ----------------------------------------------------------------------------- in-process worker


@cache
def handler_module() -> Any:
    """The real handler module: importing it loads and warms the Worker (embedded engines)."""
    import handler

    return handler


def run_job(job_input: dict[str, Any], job_id: str = "bench") -> tuple[list[dict[str, Any]], list[float]]:
    """Run one job through the real generator handler; each event with its time since the call (s)."""
    handler = handler_module().handler
    events, times = [], []
    started = time.perf_counter()
    for event in handler({"id": job_id, "input": job_input}):
        times.append(time.perf_counter() - started)
        events.append(event)
    if "error" in events[-1]:
        raise RuntimeError(f"job failed: {events[-1]['error']}")
    return events, times


@dataclass
class RawEngines:
    """faster-whisper and llama.cpp loaded directly with the worker's settings, outside the worker."""

    whisper: Any
    llama: Any
    beam_size: int
    system_prompt: str

    def transcribe(self, audio: Any, language: str | None = None, **options: Any) -> tuple[str, str]:
        kwargs = {"beam_size": self.beam_size, "vad_filter": False, "without_timestamps": True,
                  "condition_on_previous_text": False, "temperature": 0.0, **options}  # the worker's settings
        pieces, info = self.whisper.transcribe(audio, language=language, **kwargs)
        return " ".join(p.text.strip() for p in pieces).strip(), info.language

    def reply(self, text: str, max_tokens: int, temperature: float, top_p: float = 0.95) -> tuple[str, int, float]:
        """Streamed chat completion as the worker runs it: (reply, pieces, seconds to first piece)."""
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}]
        started, first, pieces = time.perf_counter(), None, []
        for chunk in self.llama.create_chat_completion(
            messages=messages, stream=True, max_tokens=max_tokens, temperature=temperature, top_p=top_p
        ):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                first = first if first is not None else time.perf_counter() - started
                pieces.append(piece)
        return "".join(pieces).strip(), len(pieces), first or 0.0


@cache
def raw_engines() -> RawEngines:
    from faster_whisper import WhisperModel
    from llama_cpp import Llama

    from worker.engines.llama import bundled_gguf_path
    from worker.engines.whisper import bundled_model_files
    from worker.settings import get_settings

    s = get_settings()
    whisper = WhisperModel("whisper-base", device="cpu", compute_type=s.asr_compute_type,
                           cpu_threads=s.cpu_threads, files=bundled_model_files())
    llama = Llama(model_path=str(bundled_gguf_path()), n_ctx=s.llm_context_tokens, n_threads=s.cpu_threads,
                  verbose=False)
    raw = RawEngines(whisper, llama, s.asr_beam_size, s.default_system_prompt)
    raw.transcribe(np.zeros(SR, np.float32))  # first calls allocate: keep them out of the numbers
    raw.reply("Hello.", 4, 0.0)
    return raw


def vad_segments(path: Path) -> list[Any]:
    """The speech segments the worker's VAD finds in a file, with the worker's default parameters."""
    from worker.audio_decode import decode_blocks
    from worker.settings import get_settings
    from worker.vad import SileroVad, SpeechSegmenter, VadParams

    s = get_settings()
    segmenter = SpeechSegmenter(_vad_session(SileroVad), VadParams(
        threshold=s.vad_threshold, min_speech_ms=s.vad_min_speech_ms, min_silence_ms=s.vad_min_silence_ms,
        speech_pad_ms=s.vad_speech_pad_ms, max_segment_s=s.vad_max_segment_seconds))
    found = []
    for block in decode_blocks(path.read_bytes(), s.max_audio_seconds):
        found += segmenter.feed(block)
    return found + list(segmenter.finish())


@cache
def _vad_session(cls: Any) -> Any:
    return cls()


# ----------------------------------------------------------------------------- subprocesses


def python(
    code: str, env: dict[str, str] | None = None, timeout: float = 600, args: Sequence[str] = ()
) -> tuple[str, str, float]:
    """Run `code` in a fresh interpreter from the repo root; (stdout, stderr, wall seconds spawn to exit)."""
    full_env = {**os.environ, **BENCH_ENV, "PYTHONPATH": str(ROOT), **(env or {})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args, "-c", code], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, done.stderr, wall


def last_json(stdout: str) -> Any:
    """The last line of a child's stdout, parsed as JSON (children print their numbers last)."""
    return json.loads(stdout.strip().splitlines()[-1])
