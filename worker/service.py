"""The worker: engines loaded and warmed once, then one `handle(job)` per job.

`handle` is the generator RunPod calls. It never lets an exception escape
(runpod-python turns that into an HTTP 500 on its local API and loses the
message): every failure becomes one `{"error": ...}` event and the worker goes
on serving.
"""

from __future__ import annotations

import base64
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.contract import parse_job_input
from worker.engines.select import load_engines
from worker.errors import JobError
from worker.metrics import WorkerHealth
from worker.pipeline import Pipeline
from worker.settings import Settings, get_settings
from worker.vad import SileroVad

log = logging.getLogger(__name__)

WARMUP_CLIP = Path(__file__).parent / "assets" / "warmup.flac"


class Worker:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        started = time.perf_counter()
        engines = load_engines(self.settings)
        self.health = WorkerHealth(engines=engines)
        self.pipeline = Pipeline(engines, SileroVad(), self.settings, self.health)
        self.health.load_seconds = round(time.perf_counter() - started, 3)
        log.info("engines ready in %.2f s: %s", self.health.load_seconds, engines.reason)

    @classmethod
    def start(cls, settings: Settings | None = None) -> Worker:
        """Load and, unless disabled, warm up: the first real job should not pay for either."""
        worker = cls(settings)
        if worker.settings.warmup:
            worker.warm_up()
        return worker

    def warm_up(self) -> None:
        """One real job on a shipped speech clip: transcription and a short reply."""
        started = time.perf_counter()
        # As base64, not a path: the clip lies outside WORKER_PATH_ROOTS when started from elsewhere.
        clip = base64.b64encode(WARMUP_CLIP.read_bytes()).decode("ascii")
        job = {"input": {"audio_base64": clip, "task": "reply", "max_new_tokens": 8}}
        events = list(self.handle(job, count=False))
        if "error" in events[-1]:
            raise RuntimeError(f"warm-up job failed: {events[-1]['error']}")
        self.health.warmup_seconds = round(time.perf_counter() - started, 3)
        log.info("warm-up done in %.2f s", self.health.warmup_seconds)

    def handle(self, job: dict[str, Any], count: bool = True) -> Iterator[dict[str, Any]]:
        job_id = job.get("id", "?") if isinstance(job, dict) else "?"
        ok = False
        try:
            raw = job.get("input") if isinstance(job, dict) else None
            if raw is None:
                raise JobError("the job has no 'input' object")
            request = parse_job_input(raw)
            yield from self.pipeline.run(request)
            ok = True
        except JobError as err:
            log.info("job %s rejected: %s", job_id, err)
            yield {"error": str(err)}
        except Exception as err:  # a bug or an engine fault: report it, keep serving
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            yield {"error": f"internal error while processing the job ({type(err).__name__}: {err}); "
                            "the worker is still serving, and the traceback is in its log"}
        finally:
            if count:
                self.health.record(ok)
