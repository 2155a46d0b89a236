"""The worker as a process: runpod-python's local API server and local test runner, called for real.

The SDK's dev server answers /stream only after the generator finishes, so these tests check
content there; streaming latency is measured on the generator in process (see bench/).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.speech import UTTERANCES, word_error_rate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("api") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, Path(log.name).read_text()
        try:
            requests.get(f"{url}/docs", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        pytest.fail("local API server did not start within 120 s")
    yield url
    process.terminate()
    process.wait(timeout=20)


def _job(path: Path, **options) -> dict:
    return {"input": {"audio_path": str(path), **options}}


def test_runsync_returns_every_event(api: str, three_utterances_wav: Path) -> None:
    body = requests.post(f"{api}/runsync", json=_job(three_utterances_wav, max_new_tokens=16), timeout=300).json()
    assert body["status"] == "COMPLETED"
    events = body["output"]
    assert [e["type"] for e in events][: len(UTTERANCES)] == ["segment"] * len(UTTERANCES)
    result = events[-1]
    assert result["type"] == "result" and result["reply"]
    assert word_error_rate(" ".join(UTTERANCES), result["transcript"]) <= 0.15


def test_run_then_stream(api: str, three_utterances_wav: Path) -> None:
    job_id = requests.post(f"{api}/run", json=_job(three_utterances_wav, task="transcribe"), timeout=30).json()["id"]
    body = requests.post(f"{api}/stream/{job_id}", timeout=300).json()
    events = [item["output"] for item in body["stream"]]
    assert body["status"] == "COMPLETED"
    starts = [e["start"] for e in events if e["type"] == "segment"]
    assert len(starts) == len(UTTERANCES) and starts == sorted(starts)
    assert events[-1]["type"] == "result"


def test_run_then_status(api: str, three_utterances_wav: Path) -> None:
    job_id = requests.post(f"{api}/run", json=_job(three_utterances_wav, task="transcribe"), timeout=30).json()["id"]
    body = requests.post(f"{api}/status/{job_id}", timeout=300).json()
    assert body["status"] == "COMPLETED" and body["output"][-1]["type"] == "result"


def test_bad_job_over_http_carries_the_error_and_the_server_keeps_serving(api: str, three_utterances_wav: Path) -> None:
    response = requests.post(f"{api}/runsync", json={"input": {"audio_path": "/etc/shadow"}}, timeout=60)
    assert response.status_code == 200
    assert "outside the allowed directories" in response.json()["output"][-1]["error"]
    ok = requests.post(f"{api}/runsync", json=_job(three_utterances_wav, task="transcribe"), timeout=300).json()
    assert ok["output"][-1]["type"] == "result"


def test_concurrent_jobs_do_not_cross_talk(api: str, three_utterances_wav: Path, four_utterances_wav: Path) -> None:
    """The registered handler is an async generator running the pipeline in a thread: jobs overlap."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.speech import FOUR_UTTERANCES

    jobs = [(three_utterances_wav, UTTERANCES), (four_utterances_wav, FOUR_UTTERANCES)] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        bodies = list(pool.map(
            lambda job: requests.post(f"{api}/runsync", json=_job(job[0], task="transcribe"), timeout=600).json(),
            jobs,
        ))
    for (_, expected), body in zip(jobs, bodies):
        result = body["output"][-1]
        assert len(result["segments"]) == len(expected)
        assert word_error_rate(" ".join(expected), result["transcript"]) <= 0.15
        assert [e for e in body["output"] if e["type"] == "segment"] == result["segments"]


def test_sdk_endpoint_client_against_the_local_server(api: str, three_utterances_wav: Path) -> None:
    """runpod.Endpoint builds '<base>/<endpoint_id>/runsync'; the dev server serves '/runsync'.

    An endpoint id of '.' makes that '<base>/./runsync', which the HTTP client normalises to
    '/runsync'. Only run_sync works this way: the SDK polls GET /status and /stream, which
    the dev server serves as POST.
    """
    import runpod

    runpod.api_key = "local-test-key"
    runpod.endpoint_url_base = api
    output = runpod.Endpoint(".").run_sync(_job(three_utterances_wav, task="transcribe"), timeout=300)
    assert output[-1]["type"] == "result" and len(output[-1]["segments"]) == len(UTTERANCES)


def _local_run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKER_WARMUP": "false"}
    return subprocess.run([sys.executable, "handler.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_test_input_json_prints_the_real_result() -> None:
    done = _local_run()  # reads ./test_input.json
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = lines.index("[")  # the JSON the worker prints (indent=2) opens and closes on lines of its own
    events = json.loads("\n".join(lines[start : lines.index("]", start) + 1]))
    result = events[-1]
    assert "paris" in result["transcript"].lower() and result["reply"]


def test_test_input_flag_exits_non_zero_on_a_job_error() -> None:
    done = _local_run("--test_input", json.dumps({"input": {"audio_base64": "@@@"}}))
    assert done.returncode == 1
    assert "not valid base64" in done.stdout + done.stderr
