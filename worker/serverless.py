"""Glue to runpod-python: the config passed to `runpod.serverless.start`.

runpod-python's local test runner (`--test_input` or ./test_input.json) calls
the handler without iterating a generator and prints the generator object. In
that mode the worker registers a function that runs the generator to the end
and returns the aggregated events, so local runs show the real result.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

Handler = Callable[[dict[str, Any]], Iterator[dict[str, Any]]]


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


def runpod_config(handler: Handler, argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv if argv is None else argv
    if is_local_test_run(argv, os.environ):
        return {"handler": collect_events(handler)}
    return {"handler": handler, "return_aggregate_stream": True}
