"""4. naive: the official RunPod ASR worker pattern vs this worker, same engines, same audio.

Naive (runpod-workers/worker-faster_whisper style): write the input to a temp file, one blocking
faster-whisper transcribe of the whole file with its own vad_filter, then one (non-streamed) LLM
call; the caller sees nothing until the end, so its time to first result is its total.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Context, Result, fmt, four_utterances, handler_module, raw_engines, run_job, spread, table

MAX_TOKENS = 64


def naive_job(raw, audio: bytes) -> tuple[float, str, str]:
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        tmp.write(audio)
        tmp.flush()
        pieces, _ = raw.whisper.transcribe(tmp.name, beam_size=raw.beam_size, vad_filter=True)
        transcript = " ".join(p.text.strip() for p in pieces).strip()
    messages = [{"role": "system", "content": raw.system_prompt}, {"role": "user", "content": transcript}]
    reply = raw.llama.create_chat_completion(messages=messages, max_tokens=MAX_TOKENS, temperature=0.0)
    return time.perf_counter() - started, transcript, reply["choices"][0]["message"]["content"]


def run(ctx: Context) -> Result:
    clip = four_utterances(ctx.workdir)
    audio = Path(clip).read_bytes()
    handler_module()
    raw = raw_engines()
    r: dict[str, list[float]] = {k: [] for k in ("naive", "first_segment", "first_token", "total", "meta_ttfs")}
    for rep in range(1 if ctx.quick else 2):
        def worker() -> None:
            events, times = run_job({"audio_path": str(clip), "task": "reply", "max_new_tokens": MAX_TOKENS,
                                     "temperature": 0.0}, f"naive-{rep}")
            r["first_segment"].append(next(t for e, t in zip(events, times) if e.get("type") == "segment"))
            r["first_token"].append(next(t for e, t in zip(events, times) if e.get("type") == "reply_delta"))
            r["total"].append(times[-1])
            r["meta_ttfs"].append(events[-1]["metadata"]["time_to_first_segment_ms"] / 1000)

        def naive() -> None:
            r["naive"].append(naive_job(raw, audio)[0])

        for step in ((worker, naive) if rep % 2 == 0 else (naive, worker)):
            step()

    first_ratio = [a / b for a, b in zip(r["first_segment"], r["naive"])]
    total_ratio = [a / b for a, b in zip(r["total"], r["naive"])]
    result = Result("naive", data={k: spread(v) for k, v in r.items()})
    result.data |= {"first_result_ratio": spread(first_ratio), "total_ratio": spread(total_ratio)}
    result.tables.append(table(
        "naive: official RunPod ASR worker pattern vs this worker (4-utterance clip, reply 64 tokens, greedy)",
        ["", "first result s", "first reply token s", "total s", "first result vs naive", "total vs naive"],
        [["naive: temp file, whole-file transcribe (vad_filter), one LLM call", fmt(r["naive"]), fmt(r["naive"]),
          fmt(r["naive"]), "1.00", "1.00"],
         ["this worker: streamed segments + streamed reply", fmt(r["first_segment"]), fmt(r["first_token"]),
          fmt(r["total"]), fmt(first_ratio), fmt(total_ratio)]],
        [f"worker first result = first segment event (metadata time_to_first_segment_ms: {fmt(r['meta_ttfs'])} s)"]))
    return result
