"""Per-job stage timings and the worker's health snapshot."""

from __future__ import annotations

import platform
import resource
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from worker.engines.base import Engines


class StageTimer:
    """Accumulates wall time per stage; stages interleave when audio streams through the pipeline."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._seconds: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] += time.perf_counter() - began

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] += seconds

    def mark(self, name: str) -> None:
        """Record the first time something happened, relative to the job's start."""
        self.marks.setdefault(name, time.perf_counter() - self.started)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def milliseconds(self) -> dict[str, float]:
        return {f"{name}_ms": round(seconds * 1000, 2) for name, seconds in self._seconds.items()}


def _rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process, from /proc (Linux)."""
    values: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"
                    values[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        values["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return values


def _gpu_memory() -> dict[str, float] | None:
    import sys

    torch = sys.modules.get("torch")  # only report if an engine already imported torch
    if torch is None or not torch.cuda.is_available():
        return None
    return {
        "allocated_mb": round(torch.cuda.memory_allocated() / 2**20, 1),
        "reserved_mb": round(torch.cuda.memory_reserved() / 2**20, 1),
        "total_mb": round(torch.cuda.get_device_properties(0).total_memory / 2**20, 1),
        "device": torch.cuda.get_device_name(0),
    }


_VERSIONED = ("runpod", "faster-whisper", "ctranslate2", "llama_cpp_python", "onnxruntime", "av", "soxr",
              "torch", "transformers", "mistral_common", "flash_attn")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass
class WorkerHealth:
    """Process-wide counters and facts; one instance per worker."""

    engines: Engines
    warmup_seconds: float | None = None
    load_seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    jobs_served: int = 0
    jobs_failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _versions: dict[str, str] = field(default_factory=_versions, repr=False)

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.jobs_served += 1
            else:
                self.jobs_failed += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "engine_selection": self.engines.reason,
            "asr": asdict(self.engines.asr.info),
            "llm": asdict(self.engines.chat.info),
            "load_seconds": self.load_seconds,
            "warmup_seconds": self.warmup_seconds,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "jobs_served": self.jobs_served,
            "jobs_failed": self.jobs_failed,
            "memory": _rss_mb(),
            "gpu_memory": _gpu_memory(),
            "versions": self._versions,
        }
