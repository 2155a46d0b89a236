"""Run the benchmarks, print their tables, write the numbers to bench/results/bench-<time>.json.

    .venv/bin/python bench/run.py                 # everything (~10 min on 2 cores; --jobs 500 adds ~35 min)
    .venv/bin/python bench/run.py --quick         # fewer repeats, shorter audio (~2 min)
    .venv/bin/python bench/run.py --only glue streaming
    .venv/bin/python bench/run.py --only memory --jobs 500
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, ROOT, Context, load_average, table  # noqa: E402

BENCHMARKS = ["glue", "stages", "vad_decode", "naive", "streaming", "cold_start", "concurrency", "memory", "voxtral"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter audio")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=" ".join(BENCHMARKS))
    parser.add_argument("--jobs", type=int, help="sequential jobs for the memory-growth check (40; 20 with --quick; the issue asks 500)")
    args = parser.parse_args()
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    started = time.perf_counter()
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "argv": sys.argv[1:],
        "load_average_start": load_average(), "cpus": _cpus(), "python": platform.python_version(),
        "git": _git_revision(),
    }
    print(f"load average at start: {meta['load_average_start']} (1/5/15 min) on {meta['cpus']} CPUs", flush=True)
    results, summary = {}, []
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"

    def save() -> None:  # after every benchmark, so an interrupted run keeps what it measured
        out.write_text(json.dumps({"meta": meta, "benchmarks": results}, indent=2, default=str))

    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        ctx = Context(quick=args.quick, jobs=args.jobs or (20 if args.quick else 40), workdir=Path(workdir))
        for name in names:
            began = time.perf_counter()
            print(f"\n== {name} ==", flush=True)
            try:
                result = importlib.import_module(f"bench.{name}").run(ctx)
            except Exception:  # one broken benchmark must not hide the others
                traceback.print_exc()
                results[name] = {"error": traceback.format_exc(limit=3)}
                save()
                continue
            for text in result.tables:
                print(text + "\n", flush=True)
            seconds = round(time.perf_counter() - began, 1)
            print(f"({name}: {seconds} s, load average {load_average()})", flush=True)
            results[name] = {**result.data, "targets": result.targets, "seconds": seconds, "tables": result.tables}
            summary += [{**t, "benchmark": name} for t in result.targets]
            save()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    meta["load_average_end"] = load_average()
    if summary:
        print("\n" + table("Issue targets", ["benchmark", "target", "measured", "limit", "result"], [
            [t["benchmark"], t["target"], "-" if t["measured"] is None else f"{t['measured']:.3g}{t['unit']}",
             f"<= {t['limit']:g}{t['unit']}", "PASS" if t["passed"] else "FAIL"] for t in summary]))
    save()
    print(f"\ntotal {meta['seconds']} s; load average at end: {meta['load_average_end']}; "
          f"wrote {out.relative_to(ROOT)}")
    return 1 if any("error" in r for r in results.values()) else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _git_revision() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
