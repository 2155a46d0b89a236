"""7. concurrency: N simultaneous /runsync jobs against runpod-python's local API server.

`python handler.py --rp_serve_api` on 127.0.0.1 only, N = 1, 2, 4 concurrent clients (a thread pool
with `requests`), a bounded number of rounds. Throughput = jobs / wall time of a round; latency =
each request's round trip. Run with the default settings and, when the setting exists, WORKER_CONCURRENCY=4.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import BENCH_ENV, ROOT, Context, Result, one_utterance, spread, table
from worker.settings import Settings

JOB_OPTIONS = {"task": "reply", "max_new_tokens": 16, "temperature": 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
             "--rp_api_port", str(self.port)],
            cwd=ROOT, env={**os.environ, **BENCH_ENV, **env}, stdout=self.log, stderr=subprocess.STDOUT,
        )
        while True:
            if self.process.poll() is not None or time.perf_counter() - started > 300:
                self.stop()
                raise RuntimeError(f"local API server did not start:\n{log.read_text()[-3000:]}")
            try:
                requests.get(f"{self.url}/docs", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.25)
        self.ready_seconds = time.perf_counter() - started

    def job(self, job_input: dict) -> float:
        started = time.perf_counter()
        body = requests.post(f"{self.url}/runsync", json={"input": job_input}, timeout=600).json()
        if body.get("status") != "COMPLETED" or body["output"][-1].get("type") != "result":
            raise RuntimeError(f"job did not complete: {str(body)[:500]}")
        return time.perf_counter() - started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def run(ctx: Context) -> Result:
    job_input = {"audio_path": str(one_utterance(ctx.workdir)), **JOB_OPTIONS}
    levels, rounds = ([1, 2], 1) if ctx.quick else ([1, 2, 4], 2)
    configs = {"default settings": {}}
    if "concurrency" in Settings.model_fields and not ctx.quick:
        configs["WORKER_CONCURRENCY=4"] = {"WORKER_CONCURRENCY": "4"}
    result = Result("concurrency", data={})
    rows = []
    for label, env in configs.items():
        server = Server(ctx.workdir / f"server-{len(rows)}.log", env)
        try:
            server.job(job_input)  # the first request through the server pays one-off costs
            base = None
            for n in levels:
                latencies, throughput = [], []
                for _ in range(rounds if n < 4 else 1):  # bounded: 2 + 4 + 4 jobs per server
                    started = time.perf_counter()
                    with ThreadPoolExecutor(n) as pool:
                        latencies += list(pool.map(lambda _: server.job(job_input), range(n)))
                    throughput.append(n / (time.perf_counter() - started))
                lat, thr = spread(latencies), spread(throughput)
                base = base or thr["median"]
                p95 = sorted(latencies)[max(0, round(0.95 * len(latencies)) - 1)]
                result.data[f"{label}, N={n}"] = {"latency_s": lat, "p95_s": p95, "jobs_per_s": thr,
                                                  "server_ready_s": server.ready_seconds}
                first = result_first(result, label)
                rows.append([label, n, len(latencies), f"{thr['median']:.3f}", f"{thr['median'] / base:.2f}",
                             f"{lat['median']:.2f}", f"{p95:.2f}", f"{lat['median'] / first:.2f}"])
        finally:
            server.stop()
    result.tables.append(table(
        f"concurrency: /runsync on the local API server ({'one round' if rounds == 1 else f'{rounds} rounds'} "
        "per N below 4, one at N=4; one ~3 s utterance, reply 16 tokens)",
        ["server", "N", "jobs", "jobs/s", "vs N=1", "p50 latency s", "p95 latency s", "p50 vs N=1"], rows,
        ["the SDK's concurrency_modifier (WORKER_CONCURRENCY, default 1) bounds jobs in flight; "
         "engine locks serialise model calls, and there are 2 cores"]))
    return result


def result_first(result: Result, label: str) -> float:
    return next(v["latency_s"]["median"] for k, v in result.data.items() if k.startswith(label))
