"""5. streaming: chunked PCM input, time to the first segment event vs the whole job.

Worker: the 4-utterance clip as pcm_s16le 16 kHz chunks of 100 ms; each event is timestamped as the
handler generator yields it. Baseline: the same audio as one file with no incremental events, run
on the worker's own engines (decode all, VAD all, transcribe all, reply, then emit), so its first
result arrives with its last.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import (Context, Result, fmt, four_utterances, handler_module, read_wav_16k, run_job, spread,
                          table)
from tests.speech import pcm_chunks
from worker.audio_decode import decode_blocks
from worker.engines.base import ChatMessage, GenerationOptions
from worker.vad import SpeechSegmenter, VadParams

MAX_TOKENS = 64


def batch_job(worker, data: bytes) -> tuple[float, str]:
    """Everything, then emit: the same engines and VAD session as the worker, no incremental events."""
    started = time.perf_counter()
    audio = np.concatenate(list(decode_blocks(data, 1800)))
    segmenter = SpeechSegmenter(worker.pipeline.vad, VadParams())
    segments = [*segmenter.feed(audio), *segmenter.finish()]
    engines = worker.pipeline.engines
    first = engines.asr.transcribe([segments[0].audio], None)  # language detected once, as the worker does
    rest = engines.asr.transcribe([s.audio for s in segments[1:]], first[0].language)
    texts = [t.text for t in first + rest if t.text]
    messages = [ChatMessage("system", worker.settings.default_system_prompt), ChatMessage("user", " ".join(texts))]
    reply = "".join(engines.chat.stream_reply(messages, GenerationOptions(MAX_TOKENS, temperature=0.0)))
    return time.perf_counter() - started, reply


def run(ctx: Context) -> Result:
    clip = four_utterances(ctx.workdir)
    chunks = pcm_chunks(read_wav_16k(clip), 100)
    data = Path(clip).read_bytes()
    worker = handler_module().worker
    job = {"chunks": chunks, "chunk_format": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1},
           "task": "reply", "max_new_tokens": MAX_TOKENS, "temperature": 0.0}
    r: dict[str, list[float]] = {k: [] for k in ("first", "total", "ratio", "batch", "consumed", "first_token")}
    for rep in range(1 if ctx.quick else 3):
        def streamed() -> None:
            events, times = run_job(job, f"streaming-{rep}")
            first = next(t for e, t in zip(events, times) if e.get("type") == "segment")
            r["first"].append(first)
            r["first_token"].append(next(t for e, t in zip(events, times) if e.get("type") == "reply_delta"))
            r["total"].append(times[-1])
            r["ratio"].append(first / times[-1])
            r["consumed"].append(events[-1]["metadata"]["chunks"]["consumed_at_first_segment"])

        def batch() -> None:
            r["batch"].append(batch_job(worker, data)[0])

        for step in ((streamed, batch) if rep % 2 == 0 else (batch, streamed)):
            step()

    ratio = spread(r["ratio"])["median"]
    result = Result("streaming", data={k: spread(v) for k, v in r.items()} | {"chunks": len(chunks)})
    first_vs_batch = [f / b for f, b in zip(r["first"], r["batch"])]
    result.tables.append(table(
        f"streaming: {len(chunks)} pcm_s16le chunks of 100 ms ({len(chunks) / 10:.1f} s, 4 utterances) vs one "
        "file processed without incremental events",
        ["", "first segment s", "first reply token s", "total s", "first / total", "first vs batch total"],
        [["worker, chunked PCM (events as they exist)", fmt(r["first"]), fmt(r["first_token"]), fmt(r["total"]),
          fmt(r["ratio"], 3), fmt(first_vs_batch, 3)],
         ["batch: decode all, VAD all, ASR all, reply, emit", fmt(r["batch"]), fmt(r["batch"]), fmt(r["batch"]),
          "1.000", "1.000"]],
        [f"target first segment / total <= 0.3: {ratio:.3f} "
         f"{result.target('streaming: first segment / total', ratio, 0.3)}",
         f"chunks read when the first segment went out: {fmt(r['consumed'], 0)} of {len(chunks)}"]))
    return result
