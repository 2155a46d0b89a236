"""8. memory: peak RSS (VmHWM) per engine, each loaded alone in a fresh process, and for the whole
worker; then RSS growth over K sequential jobs after warm-up (--jobs K; the issue's target is < 5 %
over 500 jobs). Jobs rotate through file, base64 and chunked-PCM input with a short reply; they say
language='en' to halve Whisper's per-job cost (no language detection pass), which does not change what
is allocated per job.
"""

from __future__ import annotations

import json

from bench.common import Context, Result, one_utterance, python, table

MEASURE = """
import json
from pathlib import Path
def mem():
    v = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            v[line.split(":")[0]] = int(line.split()[1]) / 1024
    return v
"""
ENGINES = {
    "python + numpy (baseline)": "import numpy",
    "Silero VAD (onnxruntime)": "from worker.vad import SileroVad\nv = SileroVad()",
    "faster-whisper base int8": "from worker.engines.whisper import FasterWhisperEngine\n"
                                "e = FasterWhisperEngine(None, 'int8', 2, 1)",
    "llama.cpp SmolLM2-135M": "from worker.engines.llama import LlamaCppEngine\ne = LlamaCppEngine(None, 4096, 2)",
}
# One call on each engine after loading it: the peak after first use, not only after load.
USE = {
    "Silero VAD (onnxruntime)": "from worker.vad import SpeechSegmenter, VadParams\n"
                                "list(SpeechSegmenter(v, VadParams()).feed(AUDIO))",
    "faster-whisper base int8": "e.transcribe([AUDIO], None)",
    "llama.cpp SmolLM2-135M": "from worker.engines.base import ChatMessage, GenerationOptions\n"
                              "''.join(e.stream_reply([ChatMessage('user', 'What is the weather like?')], "
                              "GenerationOptions(16)))",
}
GROWTH = """
import base64, time
from worker.service import Worker
from tests.speech import pcm_chunks, read_wav_16k
w = Worker.start()
loaded = mem()
clip = CLIP
audio64 = base64.b64encode(Path(clip).read_bytes()).decode()
chunks = pcm_chunks(read_wav_16k(Path(clip)), 100)
inputs = [{"audio_path": clip}, {"audio_base64": audio64},
          {"chunks": chunks, "chunk_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}}]
def job(i):
    job_input = {**inputs[i % 3], "task": "reply", "language": "en", "max_new_tokens": 8}
    events = list(w.handle({"id": str(i), "input": job_input}))
    assert events[-1].get("type") == "result", events[-1]
for i in range(6):  # warm-up: every input kind twice
    job(i)
used = mem()
samples = [(0, used["VmRSS"])]
started = time.perf_counter()
for i in range(1, JOBS + 1):
    job(i)
    if i % max(1, JOBS // 10) == 0 or i == JOBS:
        samples.append((i, mem()["VmRSS"]))
print(json.dumps({"samples": samples, "seconds": time.perf_counter() - started, "peak": mem()["VmHWM"],
                  "loaded": loaded, "used": used}))
"""


def run(ctx: Context) -> Result:
    clip = str(one_utterance(ctx.workdir))
    prelude = MEASURE + f"CLIP = {clip!r}\nfrom tests.speech import read_wav_16k\nAUDIO = read_wav_16k(Path(CLIP))\n"
    result = Result("memory", data={"engines": {}})
    rows = []
    for name, load in ENGINES.items():
        code = prelude + load + "\nloaded = mem()\n" + USE.get(name, "") + \
            "\nprint(json.dumps({'loaded': loaded, 'used': mem()}))"
        stdout, _, _ = python(code)
        m = json.loads(stdout.strip().splitlines()[-1])
        result.data["engines"][name] = m
        rows.append([name, f"{m['loaded']['VmHWM']:.0f}", f"{m['used']['VmHWM']:.0f}", f"{m['used']['VmRSS']:.0f}"])
    stdout, _, _ = python(prelude + GROWTH.replace("JOBS", str(ctx.jobs)))
    growth = json.loads(stdout.strip().splitlines()[-1])
    samples = growth["samples"]
    rows.append(["whole worker (Worker.start, incl. its warm-up job)", f"{growth['loaded']['VmHWM']:.0f}",
                 f"{growth['used']['VmHWM']:.0f}", f"{growth['used']['VmRSS']:.0f}"])
    base = result.data["engines"]["python + numpy (baseline)"]["used"]["VmHWM"]
    result.tables.append(table(
        "memory: peak RSS (VmHWM, MiB), each engine loaded alone in a fresh process",
        ["", "peak after load", "peak after one call", "RSS after one call"], rows,
        [f"baseline includes the interpreter, numpy and a decoded test clip ({base:.0f} MiB)",
         "whole worker: from the growth run's process; 'after one call' = after 6 more warm-up jobs"]))

    first, last = samples[0][1], samples[-1][1]
    pct = 100 * (last - first) / first
    per_job_kib = (last - first) * 1024 / ctx.jobs
    result.data["growth"] = growth | {"percent": pct, "kib_per_job": per_job_kib}
    half = next(v for i, v in samples if i >= ctx.jobs // 2)
    late_pct = 100 * (last - half) / half  # growth over the second half: ~0 when RSS has levelled off
    result.data["growth"]["second_half_percent"] = late_pct
    verdict = result.target(f"RSS growth over {ctx.jobs} jobs", pct, 5.0, "%")
    result.tables.append(table(
        f"memory: RSS over {ctx.jobs} sequential jobs after warm-up (one worker process; "
        f"{growth['seconds']:.0f} s of jobs)",
        ["after job", *(str(i) for i, _ in samples)],
        [["RSS MiB", *(f"{v:.0f}" for _, v in samples)]],
        [f"growth {pct:+.2f} % ({per_job_kib:+.1f} KiB/job), target < 5 %: {verdict}; second half alone "
         f"{late_pct:+.2f} % (levelling off if much smaller); peak {growth['peak']:.0f} MiB"]))
    return result
