"""3. vad_decode: VAD and decode+resample cost as a percentage of the audio's real time.

VAD: worker.vad.SpeechSegmenter over 60 s of speech, fed in 100 ms blocks as a stream would be.
Decode: worker.audio_decode.decode_blocks on the same 60 s transcoded to each codec (PyAV + soxr).
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import Context, Result, fmt, read_wav_16k, speech_clip, spread, table
from tests.speech import CODECS, transcode
from worker.audio_decode import decode_blocks
from worker.vad import SileroVad, SpeechSegmenter, VadParams

SECONDS = 60
CODEC_NAMES = ["wav", "mp3", "ogg-opus", "m4a-aac"]


def run(ctx: Context) -> Result:
    clip = speech_clip(ctx.workdir, SECONDS)
    audio = read_wav_16k(clip)
    repeats = 3 if ctx.quick else 7
    vad = SileroVad()
    result = Result("vad_decode")

    def segment(block_ms: int) -> float:
        step = 16 * block_ms
        segmenter = SpeechSegmenter(vad, VadParams())
        started = time.perf_counter()
        for i in range(0, len(audio), step):
            for _ in segmenter.feed(audio[i : i + step]):
                pass
        list(segmenter.finish())
        return time.perf_counter() - started

    segment(100)  # onnxruntime's first run allocates
    vad_rows, vad_data = [], {}
    for block_ms in (20, 100, 1000):
        pct = [100 * segment(block_ms) / SECONDS for _ in range(repeats)]
        vad_data[block_ms] = spread(pct)
        vad_rows.append([f"Silero VAD, {block_ms} ms blocks", fmt(pct, 3),
                         result.target(f"VAD % of real time ({block_ms} ms blocks)", spread(pct)["median"], 0.5, "%")])

    decode_rows, decode_data = [], {}
    for name in CODEC_NAMES:
        data = transcode(clip, ctx.workdir, name).read_bytes()
        rate = CODECS[name][3]

        def decode() -> float:
            started = time.perf_counter()
            samples = sum(len(b) for b in decode_blocks(data, 1800))
            assert abs(samples / 16_000 - SECONDS) < 0.2, samples
            return time.perf_counter() - started

        decode()
        pct = [100 * decode() / SECONDS for _ in range(repeats)]
        decode_data[name] = {"bytes": len(data), "source_rate": rate, "percent": spread(pct)}
        decode_rows.append([f"{name} ({rate / 1000:g} kHz -> 16 kHz)", f"{len(data) / 1024:.0f} KiB", fmt(pct, 3),
                            result.target(f"decode+resample % of real time ({name})", spread(pct)["median"], 1.0, "%")])

    result.data = {"audio_seconds": SECONDS, "vad_percent_by_block_ms": vad_data, "decode": decode_data,
                   "speech_fraction": float(np.mean(np.abs(audio) > 0.01))}
    result.tables.append(table(
        f"vad_decode: VAD cost as % of real time ({SECONDS} s of speech, median (min-max) of {repeats})",
        ["", "% of real time", "target <= 0.5 %"], vad_rows))
    result.tables.append(table(
        f"vad_decode: decode + resample to 16 kHz mono as % of real time ({SECONDS} s, decode_blocks)",
        ["codec", "size", "% of real time", "target <= 1 %"], decode_rows))
    return result
