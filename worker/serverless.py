"""Glue to runpod-python: the config passed to `runpod.serverless.start`.

- Production and the local API server get an *async* generator: the pipeline runs in a
  worker thread and its events are relayed through a queue, so the SDK's event loop stays
  free and `concurrency_modifier` can really run several jobs at once (engines guard their
  own models with locks).
- runpod-python's local test runner (`--test_input` or ./test_input.json) calls the handler
  without iterating a generator and prints the generator object. In that mode the worker
  registers a function that runs the generator to the end and returns the aggregated
  events, so local runs show the real result.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

Handler = Callable[[dict[str, Any]], Iterator[dict[str, Any]]]
_DONE = object()


def is_local_test_run(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """Mirror runpod-python's own rule (worker._is_local), minus the API server mode."""
    if "--rp_serve_api" in argv:
        return False
    return any(a.startswith("--test_input") for a in argv) or "RUNPOD_WEBHOOK_GET_JOB" not in environ


def collect_events(handler: Handler) -> Callable[[dict[str, Any]], Any]:
    """A non-generator handler: all events as one list, printed as JSON; an error event fails the job."""

    def run_to_end(job: dict[str, Any]) -> Any:
        events = list(handler(job))
        print(json.dumps(events, indent=2, ensure_ascii=False), flush=True)
        if events and "error" in events[-1]:
            return {"error": events[-1]["error"]}
        return events

    return run_to_end


def in_thread(handler: Handler) -> Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
    """Wrap a blocking generator handler as an async generator that runs it in its own thread."""

    async def relay(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()  # set when the consumer goes away: the producer stops early

        def produce() -> None:
            events = handler(job)
            try:
                for event in events:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                    if stop.is_set():
                        break
            finally:
                events.close()  # type: ignore[attr-defined]  # releases engine locks at once
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        thread = threading.Thread(target=produce, name=f"job-{job.get('id', '?')}", daemon=True)
        thread.start()
        try:
            while (event := await queue.get()) is not _DONE:
                yield event
        finally:
            stop.set()

    return relay


def runpod_config(handler: Handler, concurrency: int, argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv if argv is None else argv
    if is_local_test_run(argv, os.environ):
        return {"handler": collect_events(handler)}
    return {
        "handler": in_thread(handler),
        "return_aggregate_stream": True,
        "concurrency_modifier": lambda _current: concurrency,
    }
