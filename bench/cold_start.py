"""6. cold_start: seconds from process start to a ready worker, and what they are spent on.

A fresh interpreter times `import handler` (which loads and warms the Worker) with WORKER_WARMUP
true and false, with the default WORKER_ENGINE=auto a CPU container runs. The split comes from
health (load_seconds, warmup_seconds, each engine's load_seconds); imports = the rest. One more run
under `python -X importtime` names the heaviest imports.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from bench.common import Context, Result, fmt, python, spread, table

CHILD = """
import json, time
t = time.time()
import handler
ready = time.time() - t
h = handler.worker.health
print(json.dumps({"ready": ready, "load": h.load_seconds, "warmup": h.warmup_seconds or 0.0,
                  "asr_load": h.engines.asr.info.details.get("load_seconds"),
                  "llm_load": h.engines.chat.info.details.get("load_seconds"),
                  "selection": h.engines.reason}))
"""
ENGINE_STEPS = """
import json, time
from worker.engines.whisper import bundled_model_files
steps = {}
def step(name, fn):
    t = time.perf_counter(); value = fn(); steps[name] = time.perf_counter() - t; return value
step("import torch (auto engine selection's CUDA check)", lambda: __import__("torch"))
step("import faster_whisper", lambda: __import__("faster_whisper"))
files = step("read + SHA-256 Whisper weights", bundled_model_files)
from faster_whisper import WhisperModel
step("WhisperModel(files=...)", lambda: WhisperModel("whisper-base", device="cpu", compute_type="int8", files=files))
step("import llama_cpp", lambda: __import__("llama_cpp"))
from llama_cpp import Llama
from worker.engines.llama import bundled_gguf_path
step("Llama(SmolLM2 GGUF)", lambda: Llama(model_path=str(bundled_gguf_path()), n_ctx=4096, verbose=False))
from worker.vad import SileroVad
step("SileroVad()", SileroVad)
print(json.dumps(steps))
"""


def run(ctx: Context) -> Result:
    env = {"WORKER_ENGINE": "auto", "WORKER_LOG_LEVEL": "WARNING"}
    repeats = 1 if ctx.quick else 2
    runs: dict[str, list[dict]] = defaultdict(list)
    for rep in range(repeats):
        for warm in ("true", "false"):
            stdout, _, wall = python(CHILD, {**env, "WORKER_WARMUP": warm})
            child = json.loads(stdout.strip().splitlines()[-1])
            runs[warm].append({**child, "wall": wall, "imports": child["ready"] - child["load"] - child["warmup"]})
    result = Result("cold_start", data={"runs": dict(runs)})
    rows = []
    for warm, items in runs.items():
        col = lambda key: [i[key] for i in items]  # noqa: E731
        after = [i["load"] + i["warmup"] for i in items]
        verdict = result.target(f"cold start after imports (WORKER_WARMUP={warm})", spread(after)["median"], 5.0, " s")
        rows.append([f"WORKER_WARMUP={warm}", fmt(col("wall")), fmt(col("ready")), fmt(col("imports")),
                     fmt(col("load")), f"{fmt(col('asr_load'))} / {fmt(col('llm_load'))}", fmt(col("warmup")),
                     fmt(after), verdict])
    result.tables.append(table(
        f"cold_start: seconds to a ready worker (fresh process, WORKER_ENGINE=auto on CPU, {repeats} run(s) each)",
        ["", "process wall", "import handler", "imports", "engine load", "whisper / llama", "warm-up",
         "after imports", "target <= 5 s"], rows,
        ["process wall = spawn to exit (interpreter start, import handler, report); "
         "engine load includes importing faster_whisper and llama_cpp (engines import them when built)",
         f"engine selection: {runs['true'][0]['selection']}"]))

    if not ctx.quick:
        stdout, _, _ = python(ENGINE_STEPS)
        steps = json.loads(stdout.strip().splitlines()[-1])
        _, stderr, _ = python("import handler", {**env, "WORKER_WARMUP": "false"}, args=["-X", "importtime"])
        heavy = _heaviest_imports(stderr)
        result.data |= {"engine_steps": steps, "heaviest_imports": heavy}
        result.tables.append(table(
            "cold_start: engine load steps, each timed alone in one fresh process",
            ["step", "seconds"], [[k, f"{v:.2f}"] for k, v in steps.items()]))
        result.tables.append(table(
            "cold_start: heaviest imports during `import handler` (python -X importtime, cumulative)",
            ["package", "seconds"], [[k, f"{v:.2f}"] for k, v in heavy.items()],
            ["measured with importtime's own overhead; nested packages count inside their importer too"]))
    return result


def _heaviest_imports(stderr: str, top: int = 8) -> dict[str, float]:
    """Largest cumulative import time per top-level package (outermost import of each)."""
    best: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if not m:
            continue
        name = m.group(4)
        if name.split(".")[0] in ("handler", "worker") or "." in name:
            continue
        best[name] = max(best.get(name, 0.0), int(m.group(2)) / 1e6)
    return dict(sorted(best.items(), key=lambda kv: -kv[1])[:top])
