"""Hostile input, faults and load, table by table, through the real handler (embedded engines).

Every error case asserts that the job yields exactly one event, `{"error": message}`, whose message names
what was wrong (and the limit and its setting where there is one), carries no traceback and stays short; and
that afterwards the same worker still serves: a cheap liveness job after every case (0.25 s of silence: decode,
VAD and a result, no ASR) and one real transcription at the end of every table.

Decisions asserted here:
- A truncated but partly decodable file is transcribed as far as it decodes, with a "may be truncated"
  warning (from the decoder's error, the duration the headers declare, or the WAV header's data size).
  A file truncated before its first audio frame is an error.
- Several files concatenated into one `encoded` chunk stream: the first stream's container is what is
  decoded (FFmpeg's demuxer decides; there is no reliable way to tell a second file from damage).
  A file header inside raw PCM chunks is an error (the encoding is wrong).
- Empty chunk strings among real ones are skipped (a recorder's empty timeslice); all empty is an error.
- An `Exception` inside the pipeline is that job's `internal error ...`, the worker goes on; a
  `BaseException` that is not an `Exception` (KeyboardInterrupt, SystemExit) is NOT swallowed: it means
  "stop the process", and the job is counted as failed on its way out.

Cases that only need decoding run with `"vad": {"threshold": 1.0}` (Silero never reaches 1.0, so no
segment and no ASR): the decoder path is the real one, the slow model is skipped.

Network: nothing here dials anything but 127.0.0.1. A guard on urllib3's `create_connection` records and
blocks any other destination; name resolution is stubbed (no DNS query leaves the machine).
"""

from __future__ import annotations

import base64
import gzip
import http.server
import io
import ipaddress
import os
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import av
import numpy as np
import pytest

from tests.speech import read_wav_16k, transcode, word_error_rate
from worker.settings import get_settings

SENTENCE = "Please call me back tomorrow morning."
MAX_MESSAGE_CHARS = 1000
NO_ASR = {"vad": {"threshold": 1.0}}  # decode + VAD only: fast


# --------------------------------------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_one_error(events: list[dict[str, Any]], *expected: str) -> str:
    """Exactly one event, an error whose message holds every `expected` piece; short, no traceback."""
    assert len(events) == 1 and set(events[0]) == {"error"}, events[:3]
    message = events[0]["error"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message and len(message) <= MAX_MESSAGE_CHARS, message
    for piece in expected:
        assert piece in message, (piece, message)
    return message


def result_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events and not any("error" in e for e in events), events[-1:]
    assert events[-1]["type"] == "result"
    return events[-1]


def still_serves(run_job: Callable[..., list[dict[str, Any]]], m: SimpleNamespace) -> None:
    """Cheap liveness job: the worker decodes, runs the VAD and answers with a result."""
    result = result_of(run_job({"audio_base64": m.short_silence_b64, "task": "transcribe"}))
    assert any("no speech" in w for w in result["warnings"])


def transcribes(run_job: Callable[..., list[dict[str, Any]]], wer: float = 0.34, **job: Any) -> dict[str, Any]:
    """A real transcription of SENTENCE through the whole worker (WER 0.34 = at most 2 of 6 words wrong)."""
    result = result_of(run_job({"task": "transcribe", "language": "en", **job}))
    assert word_error_rate(SENTENCE, result["transcript"]) <= wer, result["transcript"]
    return result


@dataclass
class Case:
    """One table row: a job (built from the media), what the error must say, and the settings to apply."""

    id: str
    job: Callable[[SimpleNamespace], Any]
    expect: tuple[str, ...]
    limits: dict[str, Any] = field(default_factory=dict)
    max_seconds: float | None = None  # the error must come at least this fast


def cases(table: list[Case]) -> Any:
    return pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in table])


class Limits:
    """Temporarily changed settings on the live worker (restored by `undo` and at teardown)."""

    def __init__(self, handler_module: Any) -> None:
        self.live = handler_module.worker.pipeline.settings
        # The contract reads get_settings(), the pipeline its own reference: they must be one object.
        assert self.live is get_settings() and handler_module.worker.settings is self.live
        self._patch = pytest.MonkeyPatch()

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            assert hasattr(self.live, name), name
            self._patch.setattr(self.live, name, value)

    def undo(self) -> None:
        self._patch.undo()


@pytest.fixture
def limits(handler_module: Any) -> Iterator[Limits]:
    patch = Limits(handler_module)
    yield patch
    patch.undo()


def run_error_case(run_job: Callable[..., Any], m: SimpleNamespace, limits: Limits, case: Case) -> str:
    limits.set(**case.limits)
    started = time.perf_counter()
    events = run_job(case.job(m))
    elapsed = time.perf_counter() - started
    message = assert_one_error(events, *case.expect)
    if case.max_seconds is not None:
        assert elapsed < case.max_seconds, f"took {elapsed:.2f} s"
    limits.undo()
    still_serves(run_job, m)
    return message


# ---------------------------------------------------------------------------------------------- media


def wav_bytes(samples: np.ndarray, rate: int = 16_000, channels: int = 1) -> bytes:
    """16-bit WAV from float samples in [-1, 1], shape (n,) or (n, channels); stdlib `wave`."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def patch_wav(data: bytes, **fields: int) -> bytes:
    """Rewrite canonical 44-byte-header fields: channels, rate, data_size."""
    out = bytearray(data)
    offsets = {"channels": (22, "<H"), "rate": (24, "<I"), "data_size": (40, "<I")}
    for name, value in fields.items():
        offset, fmt = offsets[name]
        struct.pack_into(fmt, out, offset, value)
    if "rate" in fields or "channels" in fields:
        channels = struct.unpack_from("<H", out, 22)[0]
        struct.pack_into("<I", out, 28, struct.unpack_from("<I", out, 24)[0] * 2 * max(channels, 1))
        struct.pack_into("<H", out, 32, min(2 * channels, 65535))
    return bytes(out)


def long_silence_flac(path: Path, hours: float) -> Path:
    """Hours of digital silence in a few tens of KB: 8 kHz FLAC with 32768-sample constant frames."""
    frame = 32_768
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=8000, options={"frame_size": str(frame)})
        stream.layout = "mono"
        zeros = np.zeros((1, frame), dtype=np.int16)
        for i in range(int(hours * 3600 * 8000 / frame)):
            audio = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            audio.sample_rate, audio.pts = 8000, i * frame
            for packet in stream.encode(audio):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_video(path: Path, audio: Path | None, seconds: float) -> Path:
    """An MP4 with a solid-colour video track (H.264, or MPEG-4 part 2) and optionally an AAC audio track."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream(codec, rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=44_100)
            sound.layout = "mono"
        picture = np.full((64, 64, 3), (30, 120, 200), dtype=np.uint8)
        for i in range(max(1, int(seconds * 10))):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None and audio is not None:
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=44_100)
            with av.open(str(audio)) as source:
                for decoded in source.decode(audio=0):
                    decoded.pts = None
                    for frame in resampler.resample(decoded):
                        for packet in sound.encode(frame):
                            out.mux(packet)
            for frame in resampler.resample(None):
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return path


def sox(*args: str) -> None:
    """sox in repeatable mode (-R): its dither is otherwise randomly seeded, so every run's audio would differ."""
    subprocess.run(["sox", "-R", *args], check=True, capture_output=True)


def speak(text: str, path: Path) -> Path:
    """espeak-ng speech as 16 kHz mono WAV with 0.3 s of silence each side, the same bytes on every run."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    sox(str(raw), "-r", "16000", "-c", "1", str(path), "pad", "0.3", "0.3")
    raw.unlink()
    return path


@pytest.fixture(scope="module")
def m(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Every hostile and edge-case file, built once: espeak-ng speech, sox, PyAV and hand-made headers."""
    d = tmp_path_factory.mktemp("hostile")
    hello = speak(SENTENCE, d / "hello.wav")
    hello_bytes = hello.read_bytes()
    audio = read_wav_16k(hello)
    rng = np.random.default_rng(7)

    def save(name: str, data: bytes) -> str:
        (d / name).write_bytes(data)
        return str(d / name)

    mp3 = transcode(hello, d, "mp3").read_bytes()
    webm = transcode(hello, d, "webm-opus").read_bytes()
    ogg = transcode(hello, d, "ogg-opus").read_bytes()
    flac = transcode(hello, d, "flac").read_bytes()
    m4a = transcode(hello, d, "m4a-aac").read_bytes()
    sox(str(hello), "-r", "8000", "-e", "mu-law", "-b", "8", str(d / "telephony.wav"))
    sox(str(hello), "-r", "48000", "-c", "2", str(d / "stereo48k.wav"))
    sox(str(hello), "-c", "8", str(d / "eight.wav"))
    sox(str(hello), "-c", "64", str(d / "sixtyfour.wav"))
    sox(str(hello), "-r", "44100", str(d / "a44.wav"))
    sox(str(hello), "-r", "22050", "-c", "2", str(d / "a22.wav"))
    sox(str(d / "a44.wav"), str(d / "a44.mp3"))
    sox(str(d / "a22.wav"), str(d / "a22.mp3"))
    clipped = np.clip(audio * 30, -1, 1)
    with_nan = audio.astype("<f4")  # a copy: NaN and inf sprinkled over real speech
    with_nan[::50] = np.nan
    with_nan[1000:1010] = np.inf
    with_nan[2000:2010] = -np.inf

    return SimpleNamespace(
        dir=d,
        hello_wav=str(hello),
        hello_bytes=hello_bytes,
        hello_seconds=len(audio) / 16_000,
        hello_pcm=np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes(),
        hello_f32_nan=with_nan.tobytes(),
        mp3=mp3, webm=webm, flac=flac,
        mp3_b64=b64(mp3),
        short_silence_b64=b64(wav_bytes(np.zeros(4000))),
        silence_wav=save("silence.wav", wav_bytes(np.zeros(32_000))),
        dc_wav=save("dc.wav", wav_bytes(np.full(32_000, 0.5))),
        one_sample_wav=save("one.wav", wav_bytes(np.array([0.25]))),
        clipped_wav=save("clipped.wav", wav_bytes(clipped)),
        empty_file=save("empty.wav", b""),
        random_bytes=rng.bytes(8192),
        text_bytes=b"this is not audio at all, just some text " * 100,
        header_only=hello_bytes[:44],
        zero_channels=patch_wav(hello_bytes, channels=0),
        one_hz_wav=save("one_hz.wav", patch_wav(hello_bytes[:64_044], rate=1)),  # 64 KB that "last" 9 hours
        low_rate_wav=save("low_rate.wav", patch_wav(hello_bytes, rate=999)),
        lying_wav=save("lying.wav", patch_wav(hello_bytes, data_size=0x7FFF0000)),
        truncated_wav=save("truncated.wav", hello_bytes[: int(len(hello_bytes) * 0.6)]),
        truncated_mp3=save("truncated.mp3", mp3[: len(mp3) // 2]),
        truncated_webm=save("truncated.webm", webm[: len(webm) // 2]),
        truncated_flac=save("truncated.flac", flac[: len(flac) // 2]),
        truncated_ogg=save("truncated.ogg", ogg[: len(ogg) // 5]),
        truncated_m4a=save("truncated.m4a", m4a[: len(m4a) // 2]),
        long_silence_flac=str(long_silence_flac(d / "three_hours.flac", 3)),
        telephony_wav=str(d / "telephony.wav"),
        stereo48k_wav=str(d / "stereo48k.wav"),
        eight_wav=str(d / "eight.wav"),
        sixtyfour_wav=str(d / "sixtyfour.wav"),
        mixed_rate_mp3=save("mixed_rate.mp3", (d / "a44.mp3").read_bytes() + (d / "a22.mp3").read_bytes()),
        video=str(make_video(d / "video.mp4", hello, len(audio) / 16_000)),
        video_no_audio=str(make_video(d / "silent_film.mp4", None, 1.0)),
    )


# ------------------------------------------------------------------------------------ network guards


_real_getaddrinfo = socket.getaddrinfo


def _is_numeric_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # legacy IPv4 forms: 2130706433, 0x7f000001, 127.1
        return True
    except OSError:
        return False


class FakeDns:
    """socket.getaddrinfo for names in `names`; numeric hosts and localhost resolve for real (no DNS query);
    any other name fails as unknown. `route` maps an address to the one actually dialled (a stand-in for
    the internet: the worker validates and pins the public address, the packets go to our local server)."""

    def __init__(self) -> None:
        self.names: dict[str, Callable[[], list[str]]] = {}
        self.route: dict[str, str] = {}
        self.lookups: list[str] = []

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        if name in self.route:
            return _real_getaddrinfo(self.route[name], port, family, type, proto, flags)
        if name in self.names:
            infos = []
            for ip in self.names[name]():
                if ":" in ip:
                    infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
                else:
                    infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
            return infos
        if name == "localhost" or _is_numeric_host(name):
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (test resolver): {name}")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    """Every test here: stubbed name resolution, and no socket to anything but loopback, whatever the code does."""
    import urllib3.util.connection

    dns = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    real_connect = urllib3.util.connection.create_connection
    blocked: list[str] = []

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        targets = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        if not targets or not all(ipaddress.ip_address(t).is_loopback for t in targets):
            blocked.append(f"{host}:{port} -> {sorted(targets)}")
            raise OSError(f"test guard: refused to dial {host}:{port} ({sorted(targets)})")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded)
    for name in ("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield dns
    assert not blocked, f"the worker tried to dial non-loopback addresses: {blocked}"


class _Server(http.server.BaseHTTPRequestHandler):
    """Routes for URL cases. Every slow route is bounded (at most ~3.5 s) and stops by itself."""

    files: dict[str, bytes] = {}
    gzip_bomb = gzip.compress(b"\0" * (32 * 1024 * 1024), compresslevel=9)

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(key, value)
        self.end_headers()
        self._write(body)

    def _write(self, body: bytes) -> bool:
        try:
            for i in range(0, len(body), 65_536):
                self.wfile.write(body[i : i + 65_536])
            self.wfile.flush()
            return True
        except OSError:  # the worker hung up (cap, refusal): fine
            return False

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        route = url.path.strip("/")
        if route.startswith("file/"):
            body = self.files.get(route.removeprefix("file/"))
            self._send(200, body) if body is not None else self._send(404, b"no such file")
        elif route in ("404", "500"):
            self._send(int(route), b"nope")
        elif route == "empty":
            self._send(200, b"")
        elif route == "redirect":
            self._send(302, b"", {"Location": parse_qs(url.query)["to"][0], "Content-Length": "0"})
        elif route == "loop":
            self._send(302, b"", {"Location": "/loop", "Content-Length": "0"})
        elif route == "big-declared":
            self._send(200, b"\0" * 1_000_000)
        elif route == "big-undeclared":  # HTTP/1.0, no Content-Length: the body ends when the server closes
            self._send(200, b"\0" * 1_000_000, {"Content-Type": "audio/wav"})
        elif route == "gzip-bomb":
            self._send(200, self.gzip_bomb, {"Content-Encoding": "gzip", "Content-Length": str(len(self.gzip_bomb))})
        elif route == "sleep":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            time.sleep(3)
        elif route == "trickle":  # one byte every 0.2 s: never idle long enough for a per-read timeout
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(15):
                if not self._write(b"\0"):
                    return
                time.sleep(0.2)
        elif route == "slow-headers":  # the status line itself, one byte every 0.2 s
            for byte in b"HTTP/1.0 200 OK\r\n":
                if not self._write(bytes([byte])):
                    return
                time.sleep(0.2)
        else:
            self._send(404, b"unknown route")


@pytest.fixture(scope="module")
def server(m: SimpleNamespace) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 (the only address these tests ever connect to)."""
    _Server.files = {"hello.wav": m.hello_bytes, "silence.wav": Path(m.silence_wav).read_bytes(),
                     "notes.txt": m.text_bytes}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ============================================================================================ contract

TOO_DEEP: Any = "x"
for _ in range(10_000):
    TOO_DEEP = [TOO_DEEP]
DEEP_DICT: Any = "x"
for _ in range(10_000):
    DEEP_DICT = {"content": DEEP_DICT}


def _src(m: SimpleNamespace, **extra: Any) -> dict[str, Any]:
    return {"audio_base64": m.short_silence_b64, "task": "transcribe", **extra}


CONTRACT = [
    Case("missing-audio", lambda m: {"task": "transcribe"}, ("exactly one audio source", "found: none")),
    Case("two-sources", lambda m: _src(m, audio_path=m.hello_wav),
         ("exactly one audio source", "found: audio_path, audio_base64")),
    Case("every-source", lambda m: _src(m, audio_path="a", audio_url="http://a", chunks=["QUJD"],
                                        chunk_format={"encoding": "encoded"}),
         ("exactly one audio source", "found: audio_url, audio_path, audio_base64, chunks")),
    Case("unknown-field", lambda m: _src(m, colour="red"), ("'colour' is not a known field",)),
    Case("unknown-nested-field", lambda m: _src(m, vad={"treshold": 0.3}), ("'vad.treshold' is not a known field",)),
    Case("10k-unknown-fields", lambda m: _src(m, **{f"f{i}": i for i in range(10_000)}),
         ("'f0' is not a known field", "and 9990 more problem(s)")),
    Case("1MB-field-name", lambda m: _src(m, **{"k" * 1_000_000: 1}), ("is not a known field", "kkk...")),
    Case("max_new_tokens-string", lambda m: _src(m, max_new_tokens="5"), ("'max_new_tokens'", "valid integer")),
    Case("max_new_tokens-float", lambda m: _src(m, max_new_tokens=5.0), ("'max_new_tokens'", "valid integer")),
    Case("max_new_tokens-bool", lambda m: _src(m, max_new_tokens=True), ("'max_new_tokens'", "valid integer")),
    Case("temperature-string", lambda m: _src(m, temperature="hot"), ("'temperature'", "valid number")),
    Case("task-int", lambda m: _src(m, task=1), ("'task'", "'transcribe' or 'reply'")),
    Case("task-unknown", lambda m: _src(m, task="translate"), ("'task'", "'transcribe' or 'reply'")),
    Case("history-string", lambda m: _src(m, history="hi"), ("'history'", "valid list")),
    Case("vad-list", lambda m: _src(m, vad=[]), ("'vad'", "valid dictionary")),
    Case("audio_path-int", lambda m: {"audio_path": 123}, ("'audio_path'", "valid string")),
    Case("chunks-string", lambda m: {"chunks": "QUJD", "chunk_format": {"encoding": "encoded"}},
         ("'chunks'", "valid list")),
    Case("reply_with_audio-string", lambda m: _src(m, reply_with_audio="yes"), ("'reply_with_audio'", "boolean")),
    Case("input-string", lambda m: "just a string", ("job input must be a JSON object", "got str")),
    Case("input-list", lambda m: [_src(m)], ("job input must be a JSON object", "got list")),
    Case("input-null", lambda m: None, ("no 'input' object",)),
    Case("empty-audio_path", lambda m: {"audio_path": ""}, ("'audio_path'", "at least 1 character")),
    Case("empty-audio_url", lambda m: {"audio_url": ""}, ("'audio_url'", "at least 1 character")),
    Case("empty-audio_base64", lambda m: {"audio_base64": ""}, ("'audio_base64'", "at least 1 character")),
    Case("empty-language", lambda m: _src(m, language=""), ("'language'", "should match pattern")),
    Case("empty-history-content", lambda m: _src(m, history=[{"role": "user", "content": ""}]),
         ("'history.0.content'", "at least 1 character")),
    Case("empty-chunks", lambda m: {"chunks": [], "chunk_format": {"encoding": "encoded"}},
         ("'chunks'", "at least 1 item")),
    Case("negative-max_new_tokens", lambda m: _src(m, max_new_tokens=-5),
         ("'max_new_tokens'", "greater than or equal to 1")),
    Case("huge-max_new_tokens", lambda m: _src(m, max_new_tokens=10**9),
         ("max_new_tokens=1000000000 is over the limit of 2048", "WORKER_MAX_NEW_TOKENS_LIMIT")),
    Case("5000-digit-max_new_tokens", lambda m: _src(m, max_new_tokens=10**5000),
         ("too large to show", "WORKER_MAX_NEW_TOKENS_LIMIT")),
    Case("temperature-100", lambda m: _src(m, temperature=100), ("'temperature'", "less than or equal to 2")),
    Case("temperature-nan", lambda m: _src(m, temperature=float("nan")), ("'temperature'", "(got nan)")),
    Case("top_p-zero", lambda m: _src(m, top_p=0), ("'top_p'", "greater than 0")),
    Case("vad-threshold-negative", lambda m: _src(m, vad={"threshold": -0.1}),
         ("'vad.threshold'", "greater than or equal to 0")),
    Case("vad-threshold-1.5", lambda m: _src(m, vad={"threshold": 1.5}), ("'vad.threshold'", "less than or equal to 1")),
    Case("vad-min_silence-absurd", lambda m: _src(m, vad={"min_silence_ms": 10**7}),
         ("'vad.min_silence_ms'", "less than or equal to 10000")),
    Case("chunk-sample_rate-1", lambda m: {"chunks": ["AAAA"], "chunk_format": {"encoding": "pcm_s16le",
                                                                                 "sample_rate": 1}},
         ("'chunk_format.sample_rate'", "greater than or equal to 8000")),
    Case("chunk-channels-0", lambda m: {"chunks": ["AAAA"], "chunk_format": {"encoding": "pcm_s16le",
                                                                              "sample_rate": 16000, "channels": 0}},
         ("'chunk_format.channels'", "greater than or equal to 1")),
    Case("history-10k-messages", lambda m: _src(m, history=[{"role": "user", "content": "hi"}] * 10_000),
         ("history has 10000 messages", "limit is 64", "WORKER_MAX_HISTORY_MESSAGES")),
    Case("history-1MB-message", lambda m: _src(m, history=[{"role": "user", "content": "x" * 1_000_000}]),
         ("history[0].content has 1000000 characters", "limit is 20000", "WORKER_MAX_TEXT_CHARS")),
    Case("system_prompt-1MB", lambda m: _src(m, system_prompt="x" * 1_000_000),
         ("system_prompt has 1000000 characters", "WORKER_MAX_TEXT_CHARS")),
    Case("history-dict-as-content", lambda m: _src(m, history=[{"role": "user", "content": {"text": "hi"}}]),
         ("'history.0.content'", "valid string")),
    Case("history-10k-deep-list", lambda m: _src(m, history=TOO_DEEP), ("'history.0'", "valid dictionary")),
    Case("history-10k-deep-dict-content", lambda m: _src(m, history=[{"role": "user", "content": DEEP_DICT}]),
         ("'history.0.content'", "valid string")),
    Case("history-bad-role", lambda m: _src(m, history=[{"role": "root", "content": "hi"}]),
         ("'history.0.role'", "'system', 'user' or 'assistant'")),
    Case("history-10k-bad-messages", lambda m: _src(m, history=[{"role": "x", "content": 1}] * 10_000),
         ("'history.0.role'", "and 19990 more problem(s)")),
    Case("language-word", lambda m: _src(m, language="english"), ("'language'", "should match pattern")),
    Case("language-unsupported", lambda m: _src(m, language="zz"),
         ("language 'zz' is not supported", "omit it to auto-detect")),
    Case("reply_with_audio-on-embedded", lambda m: _src(m, task="reply", reply_with_audio=True),
         ("reply_with_audio needs a chat engine that listens to audio",)),
]


@cases(CONTRACT)
def test_contract(run_job, m, limits, case: Case) -> None:
    run_error_case(run_job, m, limits, case)


def test_contract_edges_that_are_accepted(run_job, m) -> None:
    """Boundary values are valid; an empty system_prompt means the default prompt (not an error)."""
    from worker.contract import parse_job_input

    for extra in ({"system_prompt": ""}, {"temperature": 0}, {"temperature": 2}, {"top_p": 1},
                  {"max_new_tokens": 2048}, {"vad": {"threshold": 0.0}}, {"vad": {"threshold": 1.0}},
                  {"history": [{"role": "user", "content": "x" * 20_000}] * 64}):
        parse_job_input(_src(m, **extra))
    result = result_of(run_job(_src(m, **NO_ASR, history=[{"role": "user", "content": "x" * 20_000}] * 64)))
    assert result["segments"] == []


def test_contract_table_then_a_real_job(run_job, m) -> None:
    transcribes(run_job, audio_path=m.hello_wav)


# ============================================================================================== base64

BASE64 = [
    Case("invalid-alphabet", lambda m: {"audio_base64": "!!!notbase64"},
         ("audio_base64: not valid base64", "character '!' at position 0", "A-Z a-z 0-9 + /")),
    Case("url-safe-alphabet", lambda m: {"audio_base64": base64.urlsafe_b64encode(b"\xfb\xff" * 300).decode()},
         ("not valid base64", "URL-safe base64? use the standard alphabet")),
    Case("non-ascii", lambda m: {"audio_base64": "QUJD\u00e9QUJD"}, ("not valid base64", "'\u00e9' at position 4")),
    Case("missing-padding", lambda m: {"audio_base64": m.mp3_b64.rstrip("=")[:-1]}, ("not valid base64", "padding")),
    Case("excess-padding", lambda m: {"audio_base64": "QUJD="}, ("not valid base64", "wrong padding")),
    Case("padding-in-the-middle", lambda m: {"audio_base64": "QQ==QUJD"}, ("not valid base64", "wrong padding")),
    Case("only-padding", lambda m: {"audio_base64": "===="}, ("not valid base64", "wrong padding")),
    Case("data-uri-text-plain", lambda m: {"audio_base64": "data:text/plain;base64," + m.mp3_b64},
         ("data URI media type 'text/plain' is not audio", "data:audio/wav;base64")),
    Case("data-uri-image", lambda m: {"audio_base64": "data:image/png;base64," + m.mp3_b64},
         ("media type 'image/png' is not audio",)),
    Case("data-uri-missing-type", lambda m: {"audio_base64": "data:;base64," + m.mp3_b64},
         ("data URI media type", "(missing)", "is not audio")),
    Case("data-uri-not-base64", lambda m: {"audio_base64": "data:audio/mpeg," + m.mp3_b64},
         ("malformed data URI", "data:audio/<type>;base64,<data>")),
    Case("data-uri-empty-payload", lambda m: {"audio_base64": "data:audio/wav;base64,"},
         ("audio_base64: the payload is empty",)),
    Case("whitespace-only", lambda m: {"audio_base64": " \n\t "}, ("audio_base64: the payload is empty",)),
    Case("data-uri-1MB-of-parameters", lambda m: {"audio_base64": "data:audio/wav" + ";a=b" * 250_000 + ",QUJD"},
         ("malformed data URI",), max_seconds=2.0),
    Case("over-the-byte-cap", lambda m: {"audio_base64": m.mp3_b64}, ("over the 4096 byte limit",
                                                                       "WORKER_MAX_AUDIO_BYTES"),
         limits={"max_audio_bytes": 4096}),
    Case("over-the-byte-cap-data-uri", lambda m: {"audio_base64": "data:audio/mpeg;base64," + m.mp3_b64},
         ("over the 4096 byte limit", "WORKER_MAX_AUDIO_BYTES"), limits={"max_audio_bytes": 4096}),
    Case("valid-base64-not-audio", lambda m: {"audio_base64": b64(m.text_bytes)},
         ("could not read the audio", "supported formats")),
]


@cases(BASE64)
def test_base64(run_job, m, limits, case: Case) -> None:
    run_error_case(run_job, m, limits, case)


def test_base64_table_then_a_real_job(run_job, m) -> None:
    transcribes(run_job, audio_base64="data:audio/mpeg;base64,\n" + "\n".join(
        m.mp3_b64[i : i + 76] for i in range(0, len(m.mp3_b64), 76)))  # line-wrapped, as `base64` prints it


# =============================================================================================== media

MEDIA_ERRORS = [
    Case("zero-bytes", lambda m: {"audio_path": m.empty_file}, ("the audio is empty (0 bytes)",)),
    Case("random-bytes", lambda m: {"audio_base64": b64(m.random_bytes)},
         ("could not read the audio", "supported formats: wav, flac")),
    Case("text", lambda m: {"audio_base64": b64(m.text_bytes)}, ("could not read the audio", "supported formats")),
    Case("wav-header-only", lambda m: {"audio_base64": b64(m.header_only)}, ("holds no decodable samples",)),
    Case("wav-zero-channels", lambda m: {"audio_base64": b64(m.zero_channels)}, ("could not decode the audio",)),
    Case("ogg-truncated-before-audio", lambda m: {"audio_path": m.truncated_ogg},
         ("ends before its first audio frame", "truncated")),
    Case("m4a-truncated-before-its-index", lambda m: {"audio_path": m.truncated_m4a}, ("could not read the audio",)),
    Case("wav-at-1-hz-decodes-to-hours", lambda m: {"audio_path": m.one_hz_wav},  # 64 KB: 9 hours at 1 Hz
         ("sample rate of 1 Hz, below the 1000 Hz", "header is wrong"), max_seconds=1.0),
    Case("wav-at-999-hz", lambda m: {"audio_path": m.low_rate_wav}, ("sample rate of 999 Hz",), max_seconds=1.0),
    Case("flac-3-hours-of-silence", lambda m: {"audio_path": m.long_silence_flac, "task": "transcribe"},
         ("longer than the 5 s limit", "WORKER_MAX_AUDIO_SECONDS", "split it"),
         limits={"max_audio_seconds": 5.0}, max_seconds=1.5),
    Case("video-without-audio", lambda m: {"audio_path": m.video_no_audio},
         ("the file has no audio track (found: video)",)),
]


@cases(MEDIA_ERRORS)
def test_media_errors(run_job, m, limits, case: Case) -> None:
    run_error_case(run_job, m, limits, case)


def test_long_silence_file_is_small(m) -> None:
    """The 'hours' file really is tiny: the cap must come from decoding, not from the byte cap."""
    assert Path(m.long_silence_flac).stat().st_size < 100_000
    assert Path(m.one_hz_wav).stat().st_size < 100_000


TRUNCATED = None  # decoded: some, not all


@pytest.mark.parametrize(("source", "warning", "seconds"), [
    # truncated but partly decodable: what decoded, plus a warning
    pytest.param("truncated_wav", "the WAV header declares", TRUNCATED, id="truncated-wav"),
    pytest.param("truncated_mp3", "the file may be truncated", TRUNCATED, id="truncated-mp3"),
    pytest.param("truncated_webm", "the file may be truncated", TRUNCATED, id="truncated-webm"),
    pytest.param("truncated_flac", "decoding stopped early", TRUNCATED, id="truncated-flac"),
    pytest.param("lying_wav", "the WAV header declares", "whole", id="wav-header-lies-2GB"),
    pytest.param("silence_wav", "no speech found in 2.00 s", 2.0, id="silence-only"),
    pytest.param("dc_wav", "no speech found in 2.00 s", 2.0, id="dc-offset-only"),
    pytest.param("one_sample_wav", "no speech found in 0.00 s", 0.0, id="one-sample"),
])
def test_media_served_with_a_warning(run_job, m, source: str, warning: str, seconds: float | str | None) -> None:
    result = result_of(run_job({"audio_path": getattr(m, source), "task": "transcribe", **NO_ASR}))
    assert any(warning in w for w in result["warnings"]), result["warnings"]
    decoded = result["metadata"]["audio_seconds"]
    if seconds is TRUNCATED:
        assert 0.3 < decoded < m.hello_seconds - 0.3
    else:
        assert decoded == pytest.approx(m.hello_seconds if seconds == "whole" else seconds, abs=0.01)


@pytest.mark.parametrize(("source", "codec", "rate", "channels", "wer"), [
    ("telephony_wav", "pcm_mulaw", 8000, 1, 0.34),  # 8 kHz mu-law, as telephony sends
    ("stereo48k_wav", "pcm_s16le", 48_000, 2, 0.34),
    ("eight_wav", "pcm_s16le", 16_000, 8, 0.34),  # 7.1: crashed the process (PyAV planar frames past 8 channels)
    ("clipped_wav", "pcm_s16le", 16_000, 1, 0.5),  # x30 gain, hard clipped: a harsh square wave, words survive
    ("video", "aac", 44_100, 1, 0.34),  # the audio track of an MP4 with an H.264 (or MPEG-4) video track
])
def test_media_transcribed(run_job, m, source: str, codec: str, rate: int, channels: int, wer: float) -> None:
    result = transcribes(run_job, wer=wer, audio_path=getattr(m, source))
    meta = result["metadata"]["source"]
    assert (meta["codec"], meta["sample_rate"], meta["channels"]) == (codec, rate, channels)


def test_media_64_channels_and_a_mid_stream_rate_change_decode_whole(run_job, m) -> None:
    """64 channels (past PyAV's 8-pointer planar limit); two MP3s of different rate/channels back to back."""
    wide = result_of(run_job({"audio_path": m.sixtyfour_wav, "task": "transcribe", **NO_ASR}))
    assert wide["metadata"]["source"]["channels"] == 64
    assert wide["metadata"]["audio_seconds"] == pytest.approx(m.hello_seconds, abs=0.05)
    mixed = result_of(run_job({"audio_path": m.mixed_rate_mp3, "task": "transcribe", **NO_ASR}))
    # Before the fix the 22.05 kHz half was resampled as if 44.1 kHz: half as long, an octave up.
    assert mixed["metadata"]["audio_seconds"] == pytest.approx(2 * m.hello_seconds, abs=0.15)


def test_media_table_then_a_real_job(run_job, m) -> None:
    still_serves(run_job, m)
    transcribes(run_job, audio_path=m.hello_wav)


# ================================================================================================ URLs


def _refused(url: str, *expected: str) -> Case:
    return Case(url.replace("{server}", "local"), lambda m, u=url: {"audio_url": u},
                ("audio_url refused", *expected))


NON_PUBLIC = ("non-public address", "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS")
URL_REFUSED = [
    _refused("file:///etc/passwd", "blocked URL scheme 'file'", "give an http:// or https:// URL"),
    _refused("ftp://ftp.example.com/a.wav", "blocked URL scheme 'ftp'"),
    _refused("gopher://127.0.0.1:70/", "blocked URL scheme 'gopher'"),
    _refused("not a url", "blocked URL scheme ''"),
    _refused("http:///a.wav", "URL has no host"),
    _refused("http://127.0.0.1:9/a.wav", *NON_PUBLIC),
    _refused("http://localhost:9/a.wav", *NON_PUBLIC),
    _refused("http://169.254.169.254/latest/meta-data/", *NON_PUBLIC, "169.254.169.254"),
    _refused("http://10.0.0.1/a.wav", *NON_PUBLIC),
    _refused("http://172.16.0.1/a.wav", *NON_PUBLIC),
    _refused("http://172.31.255.254/a.wav", *NON_PUBLIC),
    _refused("http://192.168.1.1/a.wav", *NON_PUBLIC),
    _refused("http://100.64.0.1/a.wav", *NON_PUBLIC),  # CGNAT
    _refused("http://0.0.0.0/a.wav", *NON_PUBLIC),
    _refused("http://[::1]/a.wav", *NON_PUBLIC),
    _refused("http://[::ffff:127.0.0.1]/a.wav", *NON_PUBLIC),
    _refused("http://[::ffff:169.254.169.254]/a.wav", *NON_PUBLIC),
    _refused("http://[fe80::1]/a.wav", *NON_PUBLIC),
    _refused("http://[fd00::1]/a.wav", *NON_PUBLIC),
    _refused("http://2130706433/a.wav", *NON_PUBLIC, "127.0.0.1"),  # 127.0.0.1 as one decimal number
    _refused("http://0x7f000001/a.wav", *NON_PUBLIC, "127.0.0.1"),
    _refused("http://127.1/a.wav", *NON_PUBLIC, "127.0.0.1"),
    _refused("http://93.184.216.34@127.0.0.1:9/a.wav", *NON_PUBLIC, "127.0.0.1"),  # userinfo trick
    _refused("http://audio.example.com/a.wav", *NON_PUBLIC, "127.0.0.1"),  # public-looking name, private address
    _refused("http://dual.example.com/a.wav", *NON_PUBLIC, "10.9.8.7"),  # one public, one private: hostile
]


def _names(dns: FakeDns) -> None:
    dns.names["audio.example.com"] = lambda: ["127.0.0.1"]
    dns.names["dual.example.com"] = lambda: ["93.184.216.34", "10.9.8.7"]


@cases(URL_REFUSED)
def test_url_refused(run_job, m, limits, loopback_only: FakeDns, case: Case) -> None:
    """Escape hatch off: refused before any connection (the loopback guard would flag any dial)."""
    _names(loopback_only)
    run_error_case(run_job, m, limits, case)


def test_url_unresolvable_host(run_job, m) -> None:
    assert_one_error(run_job({"audio_url": "http://no-such-host.invalid/a.wav"}),
                     "could not resolve host 'no-such-host.invalid'", "check the host name")


@pytest.fixture
def public_route(loopback_only: FakeDns, server: str) -> Callable[[str], str]:
    """`audio.example.com` resolves to the public 93.184.216.34, and that address is routed to the local server.

    Honest test hook for the redirect cases: with the escape hatch off, runpod-python's safe_get validates the
    first hop for real (a public address), pins the connection to it (its PinnedIPAdapter dials the IP, never
    the name), and urllib3 resolves that numeric address through socket.getaddrinfo, where the stub maps it
    to 127.0.0.1: the stand-in for the internet delivering packets. Nothing in runpod's SSRF code is patched,
    so each redirect hop's target is validated exactly as in production.
    """
    port = server.split(":")[1]
    loopback_only.names["audio.example.com"] = lambda: ["93.184.216.34"]
    loopback_only.names["internal.example.com"] = lambda: ["10.1.2.3"]
    loopback_only.route["93.184.216.34"] = "127.0.0.1"
    return lambda path: f"http://audio.example.com:{port}{path}"


def test_url_public_host_routed_to_the_local_server_is_fetched(run_job, public_route) -> None:
    """The positive control: the routing works, so the refusals below are the redirect targets' doing."""
    transcribes(run_job, audio_url=public_route("/file/hello.wav"))


@pytest.mark.parametrize(("target", "expected"), [
    ("http://169.254.169.254/latest/meta-data/", ("non-public address 169.254.169.254",)),
    ("http://internal.example.com/a.wav", ("'internal.example.com' resolves to non-public address 10.1.2.3",)),
    ("http://[::1]/a.wav", ("non-public address ::1",)),
    ("file:///etc/passwd", ("blocked URL scheme 'file'",)),
])
def test_url_redirect_to_a_private_target_is_refused(run_job, m, public_route, target: str,
                                                     expected: tuple[str, ...]) -> None:
    events = run_job({"audio_url": public_route(f"/redirect?to={target}")})
    assert_one_error(events, "audio_url refused", *expected)
    still_serves(run_job, m)


def test_url_redirect_loop_is_refused(run_job, public_route) -> None:
    assert_one_error(run_job({"audio_url": public_route("/loop")}), "audio_url refused",
                     "exceeded maximum redirects (5)")


def test_url_dns_rebinding_is_defeated_by_pinning(run_job, loopback_only: FakeDns, server: str) -> None:
    """The name answers public first, loopback after: the fetch goes to the pinned first answer, the name is
    looked up once, so a second (rebound) answer is never used."""
    answers = iter([["93.184.216.34"]] + [["127.0.0.1"]] * 10)
    loopback_only.names["rebind.example.com"] = lambda: next(answers)
    loopback_only.route["93.184.216.34"] = "127.0.0.1"
    url = f"http://rebind.example.com:{server.split(':')[1]}/file/silence.wav"
    result = result_of(run_job({"audio_url": url, "task": "transcribe"}))
    assert result["metadata"]["audio_seconds"] == pytest.approx(2.0, abs=0.01)
    assert loopback_only.lookups.count("rebind.example.com") == 1


@pytest.fixture
def private_ok(monkeypatch: pytest.MonkeyPatch, server: str) -> str:
    """The escape hatch on (same-VPC servers), for the cases about the server's behaviour, not its address."""
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    return f"http://{server}"


SLOW_OR_BIG = [
    Case("server-sleeps", lambda m: "/sleep", ("did not finish within 1 s", "WORKER_URL_TIMEOUT_SECONDS"),
         limits={"url_timeout_seconds": 1.0}, max_seconds=2.0),
    Case("server-trickles-the-body", lambda m: "/trickle", ("did not finish within 1 s", "WORKER_URL_TIMEOUT_SECONDS"),
         limits={"url_timeout_seconds": 1.0}, max_seconds=2.0),
    Case("server-trickles-the-headers", lambda m: "/slow-headers",
         ("did not finish within 1 s", "WORKER_URL_TIMEOUT_SECONDS"), limits={"url_timeout_seconds": 1.0},
         max_seconds=2.0),
    Case("body-over-cap-declared", lambda m: "/big-declared", ("over the 65536 byte limit", "WORKER_MAX_AUDIO_BYTES"),
         limits={"max_audio_bytes": 65_536}),
    Case("body-over-cap-undeclared", lambda m: "/big-undeclared",
         ("over the 65536 byte limit", "WORKER_MAX_AUDIO_BYTES"), limits={"max_audio_bytes": 65_536}),
    Case("gzip-bomb", lambda m: "/gzip-bomb", ("over the 65536 byte limit", "WORKER_MAX_AUDIO_BYTES"),
         limits={"max_audio_bytes": 65_536}),
    Case("http-404", lambda m: "/404", ("the server answered HTTP 404", "check the URL")),
    Case("http-500", lambda m: "/500", ("the server answered HTTP 500",)),
    Case("empty-body", lambda m: "/empty", ("returned an empty body",)),
    Case("body-not-audio", lambda m: "/file/notes.txt", ("could not read the audio", "supported formats")),
]


@cases(SLOW_OR_BIG)
def test_url_slow_big_or_failing_server(run_job, m, limits, private_ok: str, case: Case) -> None:
    path = case.job(m)
    run_error_case(run_job, m, limits, Case(case.id, lambda _m: {"audio_url": private_ok + path}, case.expect,
                                            case.limits, case.max_seconds))


def test_url_connection_refused(run_job, private_ok: str) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert_one_error(run_job({"audio_url": f"http://127.0.0.1:{port}/a.wav"}), "audio_url: could not fetch",
                     "ConnectionError")


def test_url_download_threads_end(private_ok: str) -> None:
    """Nothing leaks: helper threads of timed-out downloads finish (the socket is shut down, or the server
    stops dripping header bytes, bounded here to ~3.5 s)."""
    deadline = time.monotonic() + 6
    while any(t.name == "audio-url-download" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "audio-url-download"]


def test_url_table_then_a_real_job(run_job, m, private_ok: str) -> None:
    still_serves(run_job, m)
    transcribes(run_job, audio_url=f"{private_ok}/file/hello.wav")


# =============================================================================================== paths


@pytest.fixture(scope="module")
def paths(m: SimpleNamespace) -> SimpleNamespace:
    d = m.dir / "paths"
    d.mkdir()
    (d / "to_hostname.wav").symlink_to("/etc/hostname")
    (d / "to_zero.wav").symlink_to("/dev/zero")
    (d / "loop_a.wav").symlink_to(d / "loop_b.wav")
    (d / "loop_b.wav").symlink_to(d / "loop_a.wav")
    os.mkfifo(d / "fifo.wav")
    return SimpleNamespace(dir=str(d), hostname=str(d / "to_hostname.wav"), zero=str(d / "to_zero.wav"),
                           loop=str(d / "loop_a.wav"), fifo=str(d / "fifo.wav"))


OUTSIDE = ("is outside the allowed directories", "WORKER_PATH_ROOTS")
PATHS = [
    Case("traversal-absolute", lambda m: {"audio_path": f"{m.dir}/../../../../../etc/passwd"}, OUTSIDE),
    Case("traversal-relative", lambda m: {"audio_path": "../" * 12 + "etc/passwd"}, OUTSIDE),
    Case("symlink-out-of-roots", lambda m: {"audio_path": m.p.hostname}, OUTSIDE),
    Case("symlink-to-dev-zero", lambda m: {"audio_path": m.p.zero}, OUTSIDE),
    Case("dev-zero", lambda m: {"audio_path": "/dev/zero"}, OUTSIDE),
    Case("dev-urandom", lambda m: {"audio_path": "/dev/urandom"}, OUTSIDE),
    Case("proc-environ", lambda m: {"audio_path": "/proc/self/environ"}, OUTSIDE),
    Case("dev-zero-with-dev-allowed", lambda m: {"audio_path": "/dev/zero"}, ("'/dev/zero' is not a regular file",),
         limits={"path_roots": [Path("/dev")]}, max_seconds=1.0),
    Case("dev-urandom-with-dev-allowed", lambda m: {"audio_path": "/dev/urandom"}, ("is not a regular file",),
         limits={"path_roots": [Path("/dev")]}, max_seconds=1.0),
    Case("directory", lambda m: {"audio_path": m.p.dir}, ("is not a regular file",)),
    Case("fifo", lambda m: {"audio_path": m.p.fifo}, ("is not a regular file",), max_seconds=1.0),
    Case("nonexistent", lambda m: {"audio_path": f"{m.dir}/no/such/file.wav"}, ("audio_path: no such file",)),
    Case("symlink-loop", lambda m: {"audio_path": m.p.loop}, ("audio_path: no such file",)),
    Case("nul-byte", lambda m: {"audio_path": f"{m.dir}/a\x00.wav"}, ("the path contains a NUL character",)),
    Case("5000-char-path", lambda m: {"audio_path": "/tmp/" + "x" * 5000}, ("audio_path: no such file", "...'")),
    Case("over-the-byte-cap", lambda m: {"audio_path": m.hello_wav}, ("over the 1000 byte limit",
                                                                      "WORKER_MAX_AUDIO_BYTES"),
         limits={"max_audio_bytes": 1000}),
]


@cases(PATHS)
def test_paths(run_job, m, paths, limits, case: Case) -> None:
    m.p = paths
    run_error_case(run_job, m, limits, case)


def test_paths_table_then_a_real_job(run_job, m) -> None:
    relative = os.path.relpath(m.hello_wav)  # relative to the working directory, resolved like any other
    transcribes(run_job, audio_path=relative)


# ============================================================================================== chunks


def _pcm(chunks: list[str], encoding: str = "pcm_s16le", rate: int = 16_000, **extra: Any) -> dict[str, Any]:
    return {"chunks": chunks, "chunk_format": {"encoding": encoding, "sample_rate": rate}, "task": "transcribe",
            **extra}


def _pieces(data: bytes, size: int) -> list[str]:
    return [b64(data[i : i + size]) for i in range(0, len(data), size)]


CHUNKS = [
    Case("wav-file-inside-pcm", lambda m: _pcm(_pieces(m.hello_bytes, 8000)),
         ("chunks[0] starts with a file header (WAV)", "chunk_format.encoding is pcm_s16le", "encoding 'encoded'")),
    Case("mp3-file-mid-pcm-stream", lambda m: _pcm(_pieces(m.hello_pcm[:3200], 1600) + _pieces(m.mp3, 4000)),
         ("chunks[2] starts with a file header (MP3 (ID3))",)),
    Case("flac-inside-f32le", lambda m: _pcm(_pieces(m.flac, 4000), "f32le"), ("file header (FLAC)", "f32le")),
    Case("encoded-first-chunk-not-audio", lambda m: {"chunks": [b64(m.text_bytes)] + _pieces(m.webm, 2000),
                                                     "chunk_format": {"encoding": "encoded"}},
         ("could not read the audio", "supported formats")),
    Case("all-chunks-empty", lambda m: _pcm(["", ""]), ("chunks: all 2 chunk(s) are empty strings",)),
    Case("all-chunks-empty-encoded", lambda m: {"chunks": [""], "chunk_format": {"encoding": "encoded"}},
         ("chunks: all 1 chunk(s) are empty strings",)),
    Case("invalid-base64-chunk", lambda m: _pcm([b64(b"\0" * 320), "%%%"]),
         ("chunks[1]: not valid base64", "character '%'")),
    Case("wrong-padding-chunk", lambda m: _pcm(["QUJD="]), ("chunks[0]: not valid base64", "wrong padding")),
    Case("non-string-chunk", lambda m: _pcm([1]), ("'chunks.0'", "valid string")),
    Case("chunk_format-without-chunks", lambda m: {"audio_path": m.hello_wav, "chunk_format": {"encoding": "encoded"}},
         ("chunks and chunk_format go together",)),
    Case("over-the-byte-cap", lambda m: _pcm(_pieces(m.hello_pcm[:8000], 2000)),
         ("chunks hold about", "over the 2048 byte limit", "WORKER_MAX_AUDIO_BYTES"),
         limits={"max_audio_bytes": 2048}),
    Case("over-the-duration-cap", lambda m: _pcm(_pieces(b"\0" * 64_000, 3200)),
         ("longer than the 1 s limit", "WORKER_MAX_AUDIO_SECONDS"), limits={"max_audio_seconds": 1.0}),
    Case("encoded-hours-of-silence", lambda m: {"chunks": _pieces(Path(m.long_silence_flac).read_bytes(), 4096),
                                                "chunk_format": {"encoding": "encoded"}, "task": "transcribe"},
         ("longer than the 5 s limit",), limits={"max_audio_seconds": 5.0}, max_seconds=1.5),
]


@cases(CHUNKS)
def test_chunks(run_job, m, limits, case: Case) -> None:
    run_error_case(run_job, m, limits, case)


def test_chunks_odd_byte_counts_and_empty_chunks_are_carried(run_job, m) -> None:
    """s16le cut at odd byte offsets (a sample split across chunks), with empty keep-alive chunks in between."""
    chunks = _pieces(m.hello_pcm, 1001)
    chunks[3:3] = [""]
    chunks.append("")
    result = transcribes(run_job, **_pcm(chunks))
    assert result["metadata"]["audio_seconds"] == pytest.approx(len(m.hello_pcm) / 32_000, abs=0.002)
    assert result["warnings"] == []


def test_chunks_trailing_half_sample_is_a_warning(run_job, m) -> None:
    result = result_of(run_job(_pcm(_pieces(m.hello_pcm + b"\x01", 999), **NO_ASR)))
    assert any("the last 1 byte(s) did not make a whole sample frame" in w for w in result["warnings"])


def test_chunks_nan_and_inf_float_pcm_is_sanitised(run_job, m) -> None:
    transcribes(run_job, **_pcm(_pieces(m.hello_f32_nan, 6400), "f32le"))


def test_chunks_two_files_back_to_back_decode_the_first(run_job, m) -> None:
    """Decision: an `encoded` stream is one file; a second file appended is not decoded (FFmpeg's demuxer)."""
    chunks = _pieces(m.webm, 3000) + _pieces(m.mp3, 3000)
    result = result_of(run_job({"chunks": chunks, "chunk_format": {"encoding": "encoded"}, "task": "transcribe",
                                **NO_ASR}))
    assert result["metadata"]["source"]["codec"] == "opus"
    assert result["metadata"]["audio_seconds"] == pytest.approx(m.hello_seconds, abs=0.1)


# ============================================================================================== faults


def _boom(exc: BaseException) -> Callable[..., Any]:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raise_it


def test_fault_in_asr_is_an_internal_error_for_that_job_only(run_job, m, handler_module,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_module.worker.pipeline.engines.asr, "transcribe", _boom(RuntimeError("CUDA fell over")))
    assert_one_error(run_job({"audio_path": m.hello_wav, "task": "transcribe"}),
                     "internal error while processing the job (RuntimeError: CUDA fell over)",
                     "the worker is still serving", "traceback is in its log")
    monkeypatch.undo()
    transcribes(run_job, audio_path=m.hello_wav)


def test_fault_in_decoding_memory_error_is_an_internal_error(run_job, m, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.pipeline.decode_blocks", _boom(MemoryError("out of memory")))
    assert_one_error(run_job({"audio_path": m.hello_wav}), "internal error", "MemoryError: out of memory")
    monkeypatch.undo()
    still_serves(run_job, m)


def test_fault_in_the_reply_after_segments_ends_with_one_error(run_job, m, handler_module,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments already streamed stay streamed; the job then ends with exactly one error event."""
    monkeypatch.setattr(handler_module.worker.pipeline.engines.chat, "stream_reply", _boom(RuntimeError("llm died")))
    events = run_job({"audio_path": m.hello_wav, "language": "en", "max_new_tokens": 4})
    assert [e.get("type") for e in events[:-1]] == ["segment"] * (len(events) - 1) and len(events) >= 2
    assert sum("error" in e for e in events) == 1
    assert "internal error while processing the job (RuntimeError: llm died)" in events[-1]["error"]
    monkeypatch.undo()
    still_serves(run_job, m)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)], ids=["KeyboardInterrupt", "SystemExit"])
def test_base_exceptions_are_not_swallowed(run_job, m, handler_module, monkeypatch: pytest.MonkeyPatch,
                                           exc: BaseException) -> None:
    """Decision: KeyboardInterrupt / SystemExit mean "stop the process": they propagate out of the handler
    (no error event is made up for them); the job is counted as failed; the worker object stays usable."""
    health = handler_module.worker.health
    failed = health.jobs_failed
    monkeypatch.setattr("worker.pipeline.decode_blocks", _boom(exc))
    with pytest.raises(type(exc)):
        run_job({"audio_path": m.hello_wav})
    assert health.jobs_failed == failed + 1
    monkeypatch.undo()
    still_serves(run_job, m)


def test_consumer_going_away_mid_job_is_clean(run_job, m, handler_module) -> None:
    """The client disconnects after the first segment: closing the generator raises nothing, the next job runs."""
    events = handler_module.handler({"id": "gone", "input": {"audio_path": m.hello_wav, "language": "en",
                                                                "max_new_tokens": 8}})
    assert next(events)["type"] == "segment"
    events.close()
    still_serves(run_job, m)


def test_faults_then_a_real_job(run_job, m) -> None:
    transcribes(run_job, audio_path=m.hello_wav)


# ================================================================================================ load


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_load_sequential_jobs_do_not_grow_memory_threads_or_files(run_job, m) -> None:
    """30 jobs through the real handler, one in three a real transcription, the rest cheap successes and
    every kind of refusal: after a warm-up round, RSS grows < 5 % and threads / open files not at all."""
    jobs: list[tuple[dict[str, Any], bool]] = [
        ({"audio_path": m.hello_wav, "task": "transcribe", "language": "en"}, True),
        ({"audio_base64": b64(Path(m.silence_wav).read_bytes()), "task": "transcribe"}, True),
        ({"audio_base64": "%%%"}, False),
        ({"audio_path": m.hello_wav, "task": "transcribe", "language": "en"}, True),
        (_pcm(_pieces(m.hello_pcm, 3200), **NO_ASR), True),
        ({"audio_url": "http://169.254.169.254/latest/meta-data/"}, False),
        ({"audio_path": m.hello_wav, "task": "transcribe", "language": "en"}, True),
        ({"audio_base64": b64(m.random_bytes)}, False),
        ({"audio_path": m.one_hz_wav}, False),  # hours in 64 KB: the duration cap
    ]

    def round_of(count: int) -> None:
        for i in range(count):
            job, ok = jobs[i % len(jobs)]
            events = run_job(job)
            assert ("error" not in events[-1]) == ok, (job, events[-1])

    round_of(len(jobs))  # warm-up: every path once
    rss, threads, fds = _status("VmRSS"), threading.active_count(), len(os.listdir("/proc/self/fd"))
    round_of(30)
    grown = (_status("VmRSS") - rss) / rss
    assert grown < 0.05, f"RSS grew {grown:.1%} over 30 jobs ({rss} kB at the start)"
    deadline = time.monotonic() + 2  # a URL job's helper thread may still be on its way out
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads
    assert len(os.listdir("/proc/self/fd")) <= fds
