"""RunPod serverless entry point.

Importing this module loads and warms the pipeline once (so tests and tools can
run jobs in process); running it starts the RunPod worker:

    python handler.py                      # run ./test_input.json locally and print the result
    python handler.py --test_input '{"input": {...}}'
    python handler.py --rp_serve_api       # local API server: /run, /runsync, /stream, /status
"""

from collections.abc import Iterator
from typing import Any

from worker.logging_setup import configure_logging
from worker.service import Worker
from worker.settings import get_settings

configure_logging(get_settings().log_level)
worker = Worker.start()


def handler(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Generator handler: segment events, reply deltas, then one result event (or one error event)."""
    yield from worker.handle(job)


if __name__ == "__main__":
    import os

    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")  # the SDK's DEBUG level logs every event three times
    import runpod

    from worker.serverless import runpod_config

    runpod.serverless.start(runpod_config(handler, worker.settings.concurrency))
