"""Coverage-guided fuzzing of the audio decoder with atheris (libFuzzer): a short, bounded run, not part of pytest.

    .venv/bin/python -m pip install atheris           # not a project dependency (a manylinux wheel, no clang)
    .venv/bin/python bench/fuzz_decoder.py            # 60 s on decode_blocks
    .venv/bin/python bench/fuzz_decoder.py --seconds 600 --target chunks

The corpus starts from small valid files of every container the worker accepts (WAV mono/stereo/8-channel, FLAC,
MP3, Ogg/Opus, WebM/Opus, M4A/AAC). The contract under test: `decode_blocks` (or `ChunkedAudio`) yields finite
float32 blocks or raises JobError. Anything else is a finding: another exception, a crash inside FFmpeg/PyAV
(segfault, abort), a hang past -timeout, or memory past -rss_limit_mb; libFuzzer prints it and writes the input
to /tmp/fuzz-findings/ (replay: bench/fuzz_decoder.py /tmp/fuzz-findings/crash-<sha1>).

Coverage comes from the instrumented Python (worker.audio_decode, worker.audio_chunks); FFmpeg itself is not
instrumented (PyAV ships a plain build), so inside FFmpeg this is mutation fuzzing guided by Python branches.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import atheris
except ImportError:  # pragma: no cover - a tool, not a dependency
    sys.exit("atheris is not installed: .venv/bin/python -m pip install atheris")

with atheris.instrument_imports(include=["worker"]):
    from worker.audio_chunks import ChunkedAudio
    from worker.audio_decode import SourceFormat, decode_blocks
    from worker.contract import ChunkFormat
    from worker.errors import JobError

from tests.speech import encoded_tone, tone_wav  # noqa: E402  (seed files, shared with tests/test_fuzz.py)

MAX_SECONDS = 30.0


def write_seeds(corpus: Path) -> None:
    seeds = {
        "mono.wav": tone_wav(), "stereo44k.wav": tone_wav(2, 44_100), "eight.wav": tone_wav(8),
        "a.flac": encoded_tone("flac", "flac", 16_000), "a.mp3": encoded_tone("mp3", "libmp3lame", 22_050),
        "a.ogg": encoded_tone("ogg", "libopus", 48_000), "a.webm": encoded_tone("webm", "libopus", 48_000),
        "a.m4a": encoded_tone("ipod", "aac", 44_100),
    }
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)


def _check(blocks: list[np.ndarray]) -> None:
    for block in blocks:
        if block.dtype != np.float32 or not np.isfinite(block).all():
            raise AssertionError(f"bad block: dtype {block.dtype}, finite {np.isfinite(block).all()}")


def fuzz_decode(data: bytes) -> None:
    try:
        _check(list(decode_blocks(data, MAX_SECONDS, SourceFormat())))
    except JobError:
        pass


def fuzz_chunks(data: bytes) -> None:
    """The first bytes choose the encoding and the chunk sizes; the rest is the stream."""
    if len(data) < 4:
        return
    encoding = ("encoded", "pcm_s16le", "f32le")[data[0] % 3]
    step = 1 + int.from_bytes(data[1:3], "little") % 4096
    body = data[3:]
    chunks = [base64.b64encode(body[i : i + step]).decode() for i in range(0, len(body), step)] or [""]
    fmt = ChunkFormat(encoding=encoding, sample_rate=None if encoding == "encoded" else 16_000)  # type: ignore[arg-type]
    try:
        _check(list(ChunkedAudio(chunks, fmt, MAX_SECONDS, SourceFormat()).blocks()))
    except JobError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time (libFuzzer -max_total_time)")
    parser.add_argument("--target", choices=["decode", "chunks"], default="decode")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default: a fresh temporary one with seeds)")
    parser.add_argument("--findings", type=Path, default=Path(tempfile.gettempdir()) / "fuzz-findings",
                        help="where crashing inputs go")
    parser.add_argument("replay", nargs="*", help="inputs to run once each instead of fuzzing")
    args, libfuzzer_args = parser.parse_known_args()

    import av.logging

    av.logging.set_level(av.logging.PANIC)  # FFmpeg's complaints about broken input are the point, not news
    target = fuzz_decode if args.target == "decode" else fuzz_chunks
    if args.replay:
        atheris.Setup([sys.argv[0], *args.replay], target)
    else:
        corpus = args.corpus or Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
        if not any(corpus.glob("*")):
            write_seeds(corpus)
        args.findings.mkdir(parents=True, exist_ok=True)
        atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds}", "-timeout=20", "-rss_limit_mb=4096",
                       f"-artifact_prefix={args.findings}/", "-print_final_stats=1", *libfuzzer_args, str(corpus)],
                      target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
