"""Fetch a job's audio bytes from its one source, treating every source as untrusted.

- URLs go through runpod-python's SSRF-safe fetch (public addresses only, pinned
  against DNS rebinding, redirects re-validated) with a byte cap and a total deadline.
- Paths are confined to configured roots after resolving symlinks.
- Base64 is validated strictly; `data:` URIs must declare an audio (or octet-stream) type.
"""

from __future__ import annotations

import binascii
import os
import re
import socket
import stat
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from worker.errors import JobError

_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?);base64,", re.IGNORECASE)
_ACCEPTED_MEDIA_PREFIXES = ("audio/", "video/", "application/octet-stream", "application/ogg")
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/=]*")
_B64_PADDED = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64decode_strict(text: str) -> bytes:
    """Standard base64 (RFC 4648 section 4) with correct padding, else ValueError saying what is wrong.

    Stricter than `base64.b64decode(validate=True)`, which accepts excess padding such as "QUJD=".
    """
    if not _B64_ALPHABET.fullmatch(text):
        index, char = next((i, c) for i, c in enumerate(text) if not _B64_ALPHABET.fullmatch(c))
        hint = " (URL-safe base64? use the standard alphabet)" if char in "-_" else ""
        raise ValueError(f"character {char!r} at position {index} is not in the base64 alphabet A-Z a-z 0-9 + /{hint}")
    if len(text) % 4 or not _B64_PADDED.fullmatch(text):
        raise ValueError("wrong padding: the length must be a multiple of 4, with at most two '=' and only at the end")
    return binascii.a2b_base64(text)


def _show(value: str, limit: int = 120) -> str:
    """A caller's string for an error message: repr'd, and cut when long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _clip(text: str, limit: int = 300) -> str:
    """Library messages can quote a whole (caller-sized) URL: keep error messages short."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size_error(what: str, cap: int) -> JobError:
    """`what` says what is too big and, where known, its size: "audio_path 'a.wav' is 5 bytes,"."""
    return JobError(
        f"{what} over the {cap} byte limit (WORKER_MAX_AUDIO_BYTES); send a shorter or more compressed file"
    )


def decode_base64_audio(text: str, max_bytes: int) -> bytes:
    """Decode raw base64 or a `data:audio/...;base64,` URI."""
    payload = text.strip()
    if payload.lower().startswith("data:"):
        match = _DATA_URI.match(payload)
        if not match:
            raise JobError("audio_base64: malformed data URI; expected 'data:audio/<type>;base64,<data>'")
        media_type = match["type"].strip().lower()
        if not media_type.startswith(_ACCEPTED_MEDIA_PREFIXES):
            raise JobError(
                f"audio_base64: data URI media type {_show(media_type or '(missing)', 60)} is not audio; "
                "use e.g. data:audio/wav;base64,..."
            )
        payload = payload[match.end() :]
    payload = re.sub(r"\s+", "", payload)
    if not payload:
        raise JobError("audio_base64: the payload is empty")
    if len(payload) // 4 * 3 > max_bytes:
        raise _size_error(f"audio_base64 decodes to about {len(payload) // 4 * 3} bytes,", max_bytes)
    try:
        return b64decode_strict(payload)
    except (binascii.Error, ValueError) as err:
        raise JobError(f"audio_base64: not valid base64: {err}") from None


def read_confined_path(raw_path: str, roots: list[Path], max_bytes: int) -> bytes:
    """Read a file that, after resolving symlinks and '..', lies under one of `roots`."""
    if "\x00" in raw_path:
        raise JobError("audio_path: the path contains a NUL character")
    try:
        path = Path(raw_path).expanduser().resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise JobError(f"audio_path: no such file: {_show(raw_path)}") from None
    resolved_roots = [root.resolve() for root in roots]
    if not any(path.is_relative_to(root) for root in resolved_roots):
        allowed = ", ".join(str(r) for r in resolved_roots)
        raise JobError(
            f"audio_path: {_show(raw_path)} is outside the allowed directories ({allowed}); "
            "set WORKER_PATH_ROOTS to allow another"
        )
    try:
        _check_regular(os.stat(path), raw_path, max_bytes)  # before open: never open a device or FIFO at all
        # ... and again on the opened descriptor: a file swapped after the check for a FIFO (O_NONBLOCK: open
        # does not wait for a writer) or a symlink (O_NOFOLLOW) is refused, not waited on or followed.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        try:
            _check_regular(os.fstat(fd), raw_path, max_bytes)
            file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with file:
            data = file.read(max_bytes + 1)
    except OSError as err:  # removed, swapped or made unreadable after resolve()
        raise JobError(f"audio_path: could not read {_show(raw_path)}: {err.strerror or err}") from None
    if len(data) > max_bytes:  # grew after the size check
        raise _size_error(f"audio_path {_show(raw_path)} grew while being read and is", max_bytes)
    return data


def _check_regular(info: os.stat_result, raw_path: str, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise JobError(f"audio_path: {_show(raw_path)} is not a regular file")
    if info.st_size > max_bytes:
        raise _size_error(f"audio_path {_show(raw_path)} is {info.st_size} bytes,", max_bytes)


def download_url(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """Download an untrusted URL with runpod-python's SSRF guard, a byte cap and a total deadline.

    `timeout_s` bounds the whole download, not each read: the fetch runs in a helper thread and the
    job gets its error when the deadline passes, however slowly the server drips bytes (headers
    included). The socket is then shut down so the helper ends at once in the body phase; in the
    header phase it ends at its next per-read timeout.
    """
    download = _Download(url, max_bytes, timeout_s)
    thread = threading.Thread(target=download.run, name="audio-url-download", daemon=True)
    thread.start()
    if not download.done.wait(timeout_s):
        download.abandon()
        raise _timeout_error(timeout_s)
    if download.error is not None:
        raise download.error
    return download.body


def _timeout_error(timeout_s: float) -> JobError:
    return JobError(
        f"audio_url: the download did not finish within {timeout_s:g} s (WORKER_URL_TIMEOUT_SECONDS); "
        "use a faster server or send the audio another way"
    )


class _Download:
    """One URL download on a helper thread; the job's thread waits for it with the deadline."""

    def __init__(self, url: str, max_bytes: int, timeout_s: float) -> None:
        self.url, self.max_bytes, self.timeout_s = url, max_bytes, timeout_s
        self.done = threading.Event()
        self.body = b""
        self.error: JobError | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._response: Any = None

    def abandon(self) -> None:
        """Deadline passed: stop reading (a shut-down socket wakes a blocked read at once)."""
        with self._lock:
            self._abandoned = True
            if self._response is not None:
                _shutdown(self._response)

    def run(self) -> None:
        try:
            self.body = self._fetch()
        except JobError as err:
            self.error = err
        except Exception as err:  # surfaced to the job as an ordinary fetch failure, never lost
            self.error = JobError(
                f"audio_url: could not fetch {_show(self.url)}: {type(err).__name__}: {_clip(str(err))}"
            )
        finally:
            self.done.set()

    def _fetch(self) -> bytes:
        # Imported here: pulling in the runpod HTTP stack is only needed for URL jobs.
        import requests
        from runpod.serverless.utils.rp_ssrf import SSRFError, iter_content_capped, safe_get
        from urllib3.exceptions import ReadTimeoutError

        try:
            response = safe_get(self.url, timeout=self.timeout_s, max_bytes=self.max_bytes)  # type: ignore[arg-type]
        except SSRFError as err:
            raise _refusal(_clip(str(err)), self.max_bytes) from None
        except requests.Timeout:
            raise _timeout_error(self.timeout_s) from None
        except requests.RequestException as err:
            raise JobError(
                f"audio_url: could not fetch {_show(self.url)}: {type(err).__name__}: {_clip(str(err))}"
            ) from None
        with self._lock:
            if self._abandoned:
                response.close()
                return b""
            self._response = response
        with response:
            if response.status_code >= 400:
                raise JobError(
                    f"audio_url: the server answered HTTP {response.status_code} for {_show(self.url)}; "
                    "check the URL and that the file is public"
                )
            body = bytearray()
            try:
                for chunk in iter_content_capped(response, 64 * 1024, self.max_bytes):
                    body += chunk
            except SSRFError:
                raise _size_error("audio_url body is", self.max_bytes) from None
            except requests.RequestException as err:
                if self._abandoned or isinstance(err.args[0] if err.args else None, ReadTimeoutError):
                    raise _timeout_error(self.timeout_s) from None
                raise JobError(f"audio_url: download failed: {type(err).__name__}: {_clip(str(err))}") from None
        if self._abandoned:
            raise _timeout_error(self.timeout_s)
        if not body:
            raise JobError(f"audio_url: {_show(self.url)} returned an empty body")
        return bytes(body)


def _refusal(reason: str, max_bytes: int) -> JobError:
    if "size cap" in reason:
        return _size_error("audio_url body is", max_bytes)
    if reason.startswith("could not resolve host"):
        return JobError(f"audio_url: {reason}; check the host name")
    if "non-public address" in reason:
        return JobError(
            f"audio_url refused: {reason}; only public addresses are fetched "
            "(RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true allows private ones, for same-VPC servers only)"
        )
    if reason.startswith(("blocked URL scheme", "URL has no host")):
        return JobError(f"audio_url refused: {reason}; give an http:// or https:// URL")
    return JobError(f"audio_url refused: {reason}")


def _shutdown(response: Any) -> None:
    """Shut the response's socket down (not close: the reading thread owns and closes it)."""
    connection = getattr(getattr(response, "raw", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
