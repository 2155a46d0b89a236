"""9. voxtral (issue 3): Voxtral latency by attention implementation and torch.compile, one table.

    .venv/bin/python bench/voxtral.py           # GPU: the real model (WORKER_VOXTRAL_MODEL and other settings)
    .venv/bin/python bench/voxtral.py --tiny    # anywhere: a tiny random Voxtral, the same code path

Per configuration (flash_attention_2 / sdpa x compile on / off), in this process one after another
(torch._dynamo reset between): load + warm-up, then the warm latency of transcribing a ~5 s utterance,
and a reply's time to first token and tokens/s. A configuration the machine cannot run is reported
as "unavailable: <reason>" (the engine's own attention choice). The tiny model's numbers only prove
the script works; they say nothing about Voxtral's speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Context, Result, fmt, python, spread, table  # noqa: E402

CONFIGS = [("flash_attention_2", True), ("flash_attention_2", False), ("sdpa", True), ("sdpa", False)]
UTTERANCE = "Please call me back tomorrow morning, and bring the blue folder with you."
PROMPT = "What should I pack for a weekend trip to the mountains?"


def measure(settings, audio, repeats: int, max_new_tokens: int) -> dict:
    import torch

    from worker.engines import voxtral
    from worker.engines.base import ChatMessage, GenerationOptions

    cuda = torch.cuda.is_available()
    dtype = getattr(torch, settings.voxtral_dtype) if settings.voxtral_dtype != "auto" else (
        torch.bfloat16 if cuda else torch.float32)  # fmt: skip  (the engine's own rule)
    chosen, reason = voxtral._choose_attention(settings.voxtral_attention, torch, dtype)
    if chosen != settings.voxtral_attention:
        return {"unavailable": reason.removeprefix(f"{chosen}: ")}
    torch._dynamo.reset()
    started = time.perf_counter()
    engine = voxtral.VoxtralEngine.load(settings)
    load_s = time.perf_counter() - started
    if engine.info.attention != settings.voxtral_attention:
        return {"unavailable": engine.info.details["attention_reason"]}
    started = time.perf_counter()
    engine.warmup()
    engine.transcribe([audio], "en")  # this clip's shapes, once, untimed
    warmup_s = time.perf_counter() - started
    messages = [ChatMessage("user", PROMPT)]
    asr, ttft, rate = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        engine.transcribe([audio], "en")
        asr.append(time.perf_counter() - started)
        started, first = time.perf_counter(), None
        for _piece in engine.stream_reply(messages, GenerationOptions(max_new_tokens, temperature=0.0)):
            first = first if first is not None else time.perf_counter() - started
        total = time.perf_counter() - started
        tokens = engine.info.details["last_generated_tokens"]
        ttft.append(first or total)
        rate.append((tokens - 1) / (total - ttft[-1]) if tokens > 1 and total > ttft[-1] else float("nan"))
    info = engine.info
    del engine
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"load_s": load_s, "warmup_s": warmup_s, "asr_s": asr, "ttft_s": ttft, "tokens_per_s": rate,
            "tokens": tokens, "compiled": info.compiled, "compile_reason": info.details.get("compile_reason"),
            "device": info.device, "dtype": info.dtype}


def benchmark(tiny: bool, repeats: int, max_new_tokens: int, threads: int | None, compile_: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-voxtral-") as workdir:
        return _benchmark(Path(workdir), tiny, repeats, max_new_tokens, threads, compile_)


def _benchmark(workdir: Path, tiny: bool, repeats: int, max_new_tokens: int, threads: int | None,
               compile_: bool) -> dict:
    import torch

    from tests.speech import read_wav_16k, synthesize
    from worker.settings import Settings

    audio = read_wav_16k(synthesize(UTTERANCE, workdir / "utterance.wav", pad_s=0.2))
    base: dict = {}
    if tiny:
        from tests.tiny_voxtral import build_tiny_voxtral

        base = {"voxtral_model": str(build_tiny_voxtral(workdir / "tiny")), "voxtral_local_files_only": True}
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny to check the script on the tiny random model")
    if threads:
        base["cpu_threads"] = threads
    rows = {}
    for attention, compiled in CONFIGS:
        if compiled and not compile_:
            rows[f"{attention}|{compiled}"] = {"skipped": "skipped (--no-compile)"}
            continue
        settings = Settings(**base, voxtral_attention=attention, voxtral_compile=compiled)
        print(f"voxtral: {attention}, compile {'on' if compiled else 'off'} ...", file=sys.stderr, flush=True)
        rows[f"{attention}|{compiled}"] = measure(settings, audio, repeats, max_new_tokens)
    return {"model": "tiny random Voxtral (tests/tiny_voxtral.py)" if tiny else Settings().voxtral_model,
            "device": "cuda" if torch.cuda.is_available() else "cpu", "audio_seconds": len(audio) / 16_000,
            "repeats": repeats, "max_new_tokens": max_new_tokens, "rows": rows}


def render(data: dict) -> str:
    rows = []
    base = data["rows"].get("sdpa|False", {})
    for key, m in data["rows"].items():
        attention, compile_ = key.split("|")
        label = [attention, "on" if compile_ == "True" else "off"]
        if "unavailable" in m or "skipped" in m:
            rows.append([*label, m.get("skipped") or f"unavailable: {m['unavailable']}", "", "", "", "", ""])
            continue
        speedup = spread(base["asr_s"])["median"] / spread(m["asr_s"])["median"] if "asr_s" in base else None
        rows.append([*label, f"{m['load_s']:.1f} + {m['warmup_s']:.1f}", fmt(m["asr_s"], 3),
                     "-" if speedup is None else f"{speedup:.2f}", fmt(m["ttft_s"], 1, 1000),
                     fmt(m["tokens_per_s"], 0), "yes" if m["compiled"] else "no"])
    return table(
        f"voxtral: {data['model']} on {data['device']}; {data['audio_seconds']:.1f} s utterance; reply "
        f"{data['max_new_tokens']} tokens greedy; median (min-max) of {data['repeats']}",
        ["attention", "compile", "load + warm-up s", "ASR latency s", "ASR vs sdpa eager", "reply TTFT ms",
         "tokens/s", "compiled"], rows,
        ["tiny random weights: proves the code path; the tiny model never stops early, so ASR always decodes its "
         "full token budget"] if "tiny" in data["model"] else [])


def run(ctx: Context) -> Result:
    """From bench/run.py: a subprocess (torch stays out of the other benchmarks' process)."""
    out = ctx.workdir / "voxtral.json"
    argv = ["voxtral", "--tiny-without-gpu", "--json", str(out), "--repeats", "2" if ctx.quick else "3"]
    argv += ["--no-compile"] if ctx.quick else []
    script = str(ROOT / "bench" / "voxtral.py")
    code = f"import sys, runpy; sys.argv = {argv!r}; runpy.run_path({script!r}, run_name='__main__')"
    python(code, timeout=1200)
    data = json.loads(out.read_text())
    return Result("voxtral", tables=[render(data)], data=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="build and use the tiny random Voxtral")
    parser.add_argument("--tiny-without-gpu", action="store_true", help="--tiny only when there is no CUDA device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, help="CPU threads (WORKER_CPU_THREADS)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (slow on CPU)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    tiny = args.tiny
    if args.tiny_without_gpu:
        import torch

        tiny = not torch.cuda.is_available()
    data = benchmark(tiny, args.repeats, args.max_new_tokens, args.threads, compile_=not args.no_compile)
    print(render(data))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
