"""Property-based fuzzing (hypothesis) of the contract and the decoders: they only ever fail with JobError.

No models are loaded. Runs are derandomized (the same examples every run: CI stays deterministic) and bounded
by `max_examples` and `deadline`; the whole module takes well under a minute on 2 cores. For open-ended
exploration run with `--hypothesis-seed=random` or raise HYPOTHESIS_SCALE, e.g. HYPOTHESIS_SCALE=20.
bench/fuzz_decoder.py is the coverage-guided (atheris) counterpart for the decoder.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import string
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.speech import encoded_tone, tone_wav
from worker.audio_chunks import ChunkedAudio
from worker.audio_decode import SourceFormat, decode_blocks
from worker.audio_source import decode_base64_audio, read_confined_path
from worker.contract import AUDIO_SOURCES, ChunkFormat, JobInput, parse_job_input
from worker.errors import JobError

SCALE = float(os.environ.get("HYPOTHESIS_SCALE", "1"))
MAX_MESSAGE_CHARS = 1000


def bounded(examples: int, deadline_ms: int = 2000) -> Callable[[Any], Any]:
    return settings(max_examples=int(examples * SCALE), deadline=deadline_ms, derandomize=SCALE == 1,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_job_error(err: JobError) -> None:
    message = str(err)
    assert message and len(message) <= MAX_MESSAGE_CHARS and "Traceback" not in message, message


# ---------------------------------------------------------------------------------------------- contract

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**6000), max_value=10**6000)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FIELDS = [*AUDIO_SOURCES, *JobInput.model_fields]
plausible = {
    "audio_url": st.text(max_size=40) | st.just("http://example.com/a.wav"),
    "audio_path": st.text(max_size=40) | st.just("samples/question.flac"),
    "audio_base64": st.text(max_size=40),
    "chunks": st.lists(st.text(alphabet=string.ascii_letters + "+/=", max_size=12), max_size=4),
    "chunk_format": st.fixed_dictionaries({}, optional={
        "encoding": st.sampled_from(["pcm_s16le", "f32le", "encoded", "mulaw"]),
        "sample_rate": st.integers(-10, 400_000), "channels": st.integers(-2, 20)}),
    "task": st.sampled_from(["transcribe", "reply", "translate"]),
    "language": st.sampled_from(["en", "fr", "zz", "english", ""]),
    "system_prompt": st.text(max_size=30),
    "history": st.lists(st.fixed_dictionaries({}, optional={
        "role": st.sampled_from(["system", "user", "assistant", "root"]), "content": json_values}), max_size=5),
    "max_new_tokens": st.integers(-5, 10_000) | json_scalars,
    "temperature": st.floats(allow_nan=True) | json_scalars,
    "top_p": st.floats(allow_nan=True) | json_scalars,
    "reply_with_audio": st.booleans() | json_scalars,
    "reply_mode": st.sampled_from(["end", "each_utterance", "never"]),
    "vad": st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(), "threshold": st.floats(-1, 2), "min_speech_ms": st.integers(-10, 20_000),
        "min_silence_ms": st.integers(-10, 20_000), "speech_pad_ms": st.integers(-10, 5_000), "x": json_values}),
}
structured_jobs = st.fixed_dictionaries({}, optional={name: plausible.get(name, json_values) for name in FIELDS})
any_jobs = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=8)


@bounded(400)
@given(st.one_of(structured_jobs, any_jobs, json_values))
def test_parse_job_input_returns_a_job_or_raises_job_error(raw: Any) -> None:
    try:
        job = parse_job_input(raw)
    except JobError as err:
        check_job_error(err)
    else:
        assert isinstance(job, JobInput)
        assert sum(getattr(job, name) is not None for name in AUDIO_SOURCES) == 1


# ---------------------------------------------------------------------------------------------- base64


@bounded(300)
@given(st.text(max_size=300) | st.builds(lambda head, body: head + body,
                                          st.sampled_from(["data:", "data:audio/wav;base64,", "DATA:AUDIO/X;BASE64,",
                                                           "data:;base64,", "data:audio/wav;a=b;base64,", ""]),
                                          st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \n", max_size=200)))
def test_decode_base64_audio_returns_bytes_or_raises_job_error(text: str) -> None:
    try:
        data = decode_base64_audio(text, max_bytes=100)
    except JobError as err:
        check_job_error(err)
    else:
        assert isinstance(data, bytes) and 0 < len(data) <= 100


@bounded(200)
@given(st.binary(min_size=1, max_size=300), st.sampled_from(["", "data:audio/wav;base64,", "data:video/mp4;base64,"]),
       st.integers(0, 80))
def test_decode_base64_audio_round_trips_standard_base64(data: bytes, prefix: str, wrap: int) -> None:
    encoded = base64.b64encode(data).decode()
    if wrap:  # line-wrapped, as MIME and `base64` print it
        encoded = "\n".join(encoded[i : i + wrap] for i in range(0, len(encoded), wrap))
    assert decode_base64_audio(prefix + encoded, max_bytes=1000) == data


# ----------------------------------------------------------------------------------------------- paths


@bounded(200)
@given(st.text(max_size=60) | st.builds(lambda a, b: a + b, st.sampled_from(["../", "/", "~", "/proc/", "/dev/", ""]),
                                         st.text(max_size=40)))
def test_read_confined_path_never_reads_outside_its_root(tmp_path_factory: pytest.TempPathFactory, raw: str) -> None:
    root = tmp_path_factory.getbasetemp() / "fuzz-root"
    root.mkdir(exist_ok=True)
    (root / "a.wav").write_bytes(b"RIFF")
    try:
        data = read_confined_path(raw, [root], max_bytes=100)
    except JobError as err:
        check_job_error(err)
    else:
        assert data == b"RIFF"


# -------------------------------------------------------------------------------------------- decoders


@functools.cache
def seeds() -> list[bytes]:
    """Small valid files of every container the worker accepts (and an 8-channel WAV): mutation starting points.

    A cached function, not a fixture: hypothesis prints a failing test's arguments, and these are 100 KB."""
    return [tone_wav(), tone_wav(channels=2, rate=44_100), tone_wav(channels=8), encoded_tone("flac", "flac", 16_000),
            encoded_tone("mp3", "libmp3lame", 22_050), encoded_tone("ogg", "libopus", 48_000),
            encoded_tone("webm", "libopus", 48_000), encoded_tone("ipod", "aac", 44_100)]


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=6)


def _mutate(seed: bytes, edits: list[tuple[float, bytes]], keep: float) -> bytes:
    data = bytearray(seed[: max(1, int(len(seed) * keep))])
    for where, patch in edits:
        at = int(where * len(data))
        data[at : at + len(patch)] = patch
    return bytes(data)


def _decode_all(data: bytes | io.RawIOBase) -> list[np.ndarray]:
    return list(decode_blocks(data, max_seconds=30.0, fmt=SourceFormat()))  # type: ignore[arg-type]


def _check_blocks(blocks: list[np.ndarray]) -> None:
    for block in blocks:
        assert block.dtype == np.float32 and block.ndim == 1
        assert np.isfinite(block).all() and np.abs(block).max(initial=0) <= 1.0
    assert sum(len(b) for b in blocks) <= 30 * 16_000 + 16_000  # the duration cap (+ one resampler tail)


@bounded(300, deadline_ms=5000)
@given(st.binary(max_size=4096))
def test_decode_blocks_on_arbitrary_bytes(data: bytes) -> None:
    try:
        _check_blocks(_decode_all(data))
    except JobError as err:
        check_job_error(err)


@bounded(400, deadline_ms=5000)
@given(st.integers(0, 7), mutations, st.floats(0.05, 1.0))
def test_decode_blocks_on_mutated_real_files(seed_index: int, edits: list[tuple[float, bytes]], keep: float) -> None:
    seed = seeds()[seed_index]
    try:
        _check_blocks(_decode_all(_mutate(seed, edits, keep)))
    except JobError as err:
        check_job_error(err)


@bounded(150, deadline_ms=5000)
@given(st.integers(0, 7), mutations, st.lists(st.integers(1, 3000), min_size=1, max_size=8),
       st.sampled_from(["encoded", "pcm_s16le", "f32le"]), st.integers(1, 3))
def test_chunked_audio_on_mutated_chunk_streams(seed_index: int, edits: list[tuple[float, bytes]], cuts: list[int],
                                                encoding: str, channels: int) -> None:
    raw = _mutate(seeds()[seed_index], edits, 1.0)
    chunks, at = [], 0
    for size in cuts * (len(raw) // max(1, sum(cuts)) + 1):
        if at >= len(raw):
            break
        chunks.append(base64.b64encode(raw[at : at + size]).decode())
        at += size
    assume(chunks)
    fmt = ChunkFormat(encoding=encoding, sample_rate=None if encoding == "encoded" else 16_000,  # type: ignore[arg-type]
                      channels=channels)
    try:
        _check_blocks(list(ChunkedAudio(chunks, fmt, 30.0, SourceFormat()).blocks()))
    except JobError as err:
        check_job_error(err)
