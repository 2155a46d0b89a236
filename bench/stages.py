"""2. stages: where a job's time goes, per second of audio, for 5 s to 10 min of speech.

Stage times come from the job's own metadata (timings_ms). Constant ms per audio second across
lengths = linear growth; the log-log slope of each stage's ms against audio length says the same
in one number (1.0 = linear, 2.0 = quadratic). Jobs longer than 30 s use task=transcribe (no LLM):
a reply to a 10-minute transcript would measure the prompt length, not the pipeline.
"""

from __future__ import annotations

import math

import numpy as np

from bench.common import BENCH, Context, Result, fmt, handler_module, run_job, speech_clip, spread, table

STAGES = ["fetch", "decode", "vad", "asr", "llm_ttft", "llm"]
PLOT = BENCH / "stage_time_vs_length.png"


def run(ctx: Context) -> Result:
    lengths = [5, 30] if ctx.quick else [5, 30, 120, 600]
    handler_module()
    rows, data = [], {}
    for seconds in lengths:
        clip = speech_clip(ctx.workdir, seconds)
        task = "reply" if seconds <= 30 else "transcribe"
        repeats = 3 if seconds <= 30 and not ctx.quick else 1  # median of 3 survives one disturbed run
        runs = []
        for rep in range(repeats):
            events, _ = run_job({"audio_path": str(clip), "task": task, "max_new_tokens": 32, "temperature": 0.0},
                                f"stages-{seconds}-{rep}")
            runs.append(events[-1])
        meta = [r["metadata"] for r in runs]
        ms = {s: [m["timings_ms"].get(f"{s}_ms", 0.0) for m in meta] for s in [*STAGES, "total"]}
        ms["without_llm"] = [t - llm for t, llm in zip(ms["total"], ms["llm"])]  # comparable across tasks
        data[seconds] = {"task": task, "segments": len(runs[0]["segments"]),
                         "audio_seconds": meta[0]["audio_seconds"], "ms": {k: spread(v) for k, v in ms.items()},
                         "segment_asr_ms": [t["asr_ms"] for t in meta[0]["segment_timings"]]}
        per_s = {k: spread(v)["median"] / meta[0]["audio_seconds"] for k, v in ms.items()}
        rows.append([f"{seconds} s", task, len(runs[0]["segments"]),
                     *(f"{per_s[s]:.2f}" if ms[s][0] else "-" for s in STAGES),
                     f"{per_s['total']:.1f}", fmt([v / 1000 for v in ms["total"]], 1)])
        data[seconds]["ms_per_audio_second"] = per_s

    notes = ["ms per second of audio (median of 3 runs for 5 s and 30 s, one run for longer clips); "
             "stages interleave as audio streams, each is the time spent in it"]
    if len(lengths) > 2:
        slopes = {s: _slope(lengths, [data[n]["ms"][s]["median"] for n in lengths])
                  for s in ("decode", "vad", "asr", "without_llm")}
        segs = _slope(lengths, [data[n]["segments"] for n in lengths])
        listed = ", ".join(f"{k} {v:.2f}" for k, v in slopes.items())
        notes.append(f"log-log slope 5 s -> 10 min (1.0 = linear): {listed} (total - llm); segments {segs:.2f}")
        data["slopes"] = slopes
        _plot(lengths, data)
        notes.append(f"plot: {PLOT.relative_to(BENCH.parent)}")
    else:
        notes.append("plot not written with --quick (two lengths)")
    result = Result("stages", data={"by_length": data})
    result.tables.append(table(
        "stages: ms per second of audio, from each job's metadata.timings_ms",
        ["audio", "task", "segments", *(f"{s}" for s in STAGES), "total", "job s"], rows, notes))
    return result


def _slope(xs: list[float], ys: list[float]) -> float:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y > 0]
    return float(np.polyfit(*zip(*pts), 1)[0]) if len(pts) > 1 else float("nan")


def _plot(lengths: list[int], data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for stage in ["decode", "vad", "asr", "llm", "total"]:
        ys = [data[n]["ms"].get(stage, {}).get("median", 0.0) for n in lengths]
        xs = [n for n, y in zip(lengths, ys) if y > 0]
        if xs:
            ax.plot(xs, [y for y in ys if y > 0], marker="o", label=stage)
    ref = float(np.median([data[n]["ms"]["asr"]["median"] / n for n in lengths]))
    ax.plot(lengths, [ref * n for n in lengths], "k:", linewidth=1, label="linear (median asr ms per s)")
    ax.set(xscale="log", yscale="log", xlabel="audio length (s)", ylabel="stage time (ms)",
           title="Stage time vs audio length (2 CPU cores, embedded engines;\n"
                                     "reply up to 30 s, transcribe beyond)")
    ax.set_xticks(lengths, [f"{n} s" if n < 60 else f"{n // 60} min" for n in lengths])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT)
    plt.close(fig)
