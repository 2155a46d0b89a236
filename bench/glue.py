"""1. glue: a job through the real handler vs the raw engine calls it is made of.

Raw = faster-whisper on the same VAD segments + llama.cpp generating the same tokens (same settings,
greedy so both sides produce identical text). The ratio is everything the worker adds: decoding, VAD,
events, metadata. Second table: the worker's per-utterance ASR vs one whole-file Whisper call.
"""

from __future__ import annotations

import math

from bench.common import (Context, Result, fmt, four_utterances, handler_module, raw_engines, read_wav_16k,
                          run_job, spread, table, timed, vad_segments)

MAX_TOKENS = 64


def per_segment(raw, segments) -> list[str]:
    """The worker's ASR calls: language detected on the first utterance, then kept for the job."""
    texts, language = [], None
    for segment in segments:
        text, detected = raw.transcribe(segment.audio, language)
        texts.append(text)
        language = language or detected
    return texts


def run(ctx: Context) -> Result:
    clip = four_utterances(ctx.workdir)
    handler_module()
    raw = raw_engines()
    segments = vad_segments(clip)
    whole = read_wav_16k(clip)
    job = {"audio_path": str(clip), "task": "reply", "max_new_tokens": MAX_TOKENS, "temperature": 0.0}

    keys = ("worker", "raw_asr", "raw_llm", "ratio", "worker_asr", "raw_asr_every", "whole", "own")
    r: dict[str, list[float]] = {k: [] for k in keys}
    tokens: dict[str, list[int]] = {"worker": [], "raw": []}
    texts: dict[str, str] = {}
    for rep in range(1 if ctx.quick else 3):
        def worker_job() -> None:
            events, times = run_job(job, f"glue-{rep}")
            r["worker"].append(times[-1])
            ms = events[-1]["metadata"]["timings_ms"]
            r["worker_asr"].append(ms["asr_ms"] / 1000)
            r["own"].append(ms["total_ms"] / (ms["asr_ms"] + ms["llm_ms"]))  # same run: immune to machine noise
            tokens["worker"].append(sum(e.get("type") == "reply_delta" for e in events))
            texts["worker_transcript"], texts["worker_reply"] = events[-1]["transcript"], events[-1]["reply"]

        def raw_calls() -> None:
            parts, asr_s = timed(lambda: per_segment(raw, segments))
            transcript = " ".join(p for p in parts if p)
            (reply, pieces, _), llm_s = timed(lambda: raw.reply(transcript, MAX_TOKENS, 0.0))
            r["raw_asr"].append(asr_s)
            r["raw_llm"].append(llm_s)
            tokens["raw"].append(pieces)
            texts["raw_transcript"], texts["raw_reply"] = transcript, reply

        for step in ((worker_job, raw_calls) if rep % 2 == 0 else (raw_calls, worker_job)):  # alternate order
            step()
        r["ratio"].append(r["worker"][-1] / (r["raw_asr"][-1] + r["raw_llm"][-1]))
        if not ctx.quick and rep == 0:  # once: the cost the worker had before it kept the detected language
            r["raw_asr_every"].append(timed(lambda: [raw.transcribe(s.audio) for s in segments])[1])
        r["whole"].append(timed(lambda: raw.transcribe(whole))[1])

    result = Result("glue", data={"seconds": {k: spread(v) for k, v in r.items()}, "tokens": tokens,
                                  "segments": len(segments), "audio_seconds": len(whole) / 16_000, **texts})
    ratio = spread(r["ratio"])["median"]
    same = texts["worker_transcript"] == texts["raw_transcript"] and texts["worker_reply"] == texts["raw_reply"]
    raw_total = [a + b for a, b in zip(r["raw_asr"], r["raw_llm"])]
    fastest = min(r["worker"]) / min(raw_total)  # least disturbed run of each side
    result.data["ratio_of_fastest"] = fastest
    result.tables.append(table(
        f"glue: one job through the handler vs the raw engine calls ({len(whole) / 16_000:.1f} s clip, "
        f"{len(segments)} utterances, reply {MAX_TOKENS} tokens max, greedy)",
        ["", "seconds", "tokens", "vs raw"],
        [["worker job (handler, end to end)", fmt(r["worker"]), fmt(tokens["worker"], 0), fmt(r["ratio"], 3)],
         ["raw: faster-whisper per segment + llama.cpp", fmt(raw_total), fmt(tokens["raw"], 0), "1.000"],
         ["  of which faster-whisper", fmt(r["raw_asr"]), "", ""],
         ["  of which llama.cpp", fmt(r["raw_llm"]), "", ""],
         ["worker's own metadata: total_ms / (asr_ms + llm_ms)", "", "", fmt(r["own"], 3)]],
        [f"target worker / raw <= 1.05: {ratio:.3f} {result.target('glue: job / raw engine calls', ratio, 1.05)} "
         f"(median of paired runs; fastest worker run / fastest raw run: {fastest:.3f})",
         "identical transcript and reply on both sides" if same else "transcript or reply differ (see JSON)",
         "the last row compares stages inside the same job, so other processes' load cancels out"],
    ))

    windows = math.ceil(len(whole) / 16_000 / 30)
    whole_med = spread(r["whole"])["median"]
    rows = [
        ["worker: its ASR stage (per utterance)", len(segments) + 1, fmt(r["worker_asr"]),
         fmt([a / whole_med for a in r["worker_asr"]])],
        ["raw: per utterance, language detected on the first", len(segments) + 1, fmt(r["raw_asr"]),
         fmt([a / whole_med for a in r["raw_asr"]])],
        ["raw: per utterance, language detected on every call" + (" (not with --quick)" if ctx.quick else ""),
         2 * len(segments), fmt(r["raw_asr_every"]), fmt([a / whole_med for a in r["raw_asr_every"]])],
        ["raw: whole file, one call, language auto", windows + 1, fmt(r["whole"]), "1.00"],
    ]
    result.tables.append(table(
        "glue: the cost of per-utterance streaming ASR (Whisper pads every call to a 30 s window)",
        ["", "30 s windows encoded", "ASR seconds", "vs whole file"], rows,
        ["language detection is one more encoder pass; the worker detects once per job and keeps the language"],
    ))
    return result
