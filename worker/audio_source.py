"""Fetch a job's audio bytes from its one source, treating every source as untrusted.

- URLs go through runpod-python's SSRF-safe fetch (public addresses only, pinned
  against DNS rebinding, redirects re-validated) with a byte cap and a total deadline.
- Paths are confined to configured roots after resolving symlinks.
- Base64 is validated strictly; `data:` URIs must declare an audio (or octet-stream) type.
"""

from __future__ import annotations

import base64
import binascii
import re
import stat
import time
from pathlib import Path

from worker.errors import JobError

_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?);base64,", re.IGNORECASE)
_ACCEPTED_MEDIA_PREFIXES = ("audio/", "video/", "application/octet-stream", "application/ogg")


def _size_error(what: str, size: int | str, cap: int) -> JobError:
    return JobError(
        f"{what} is {size} bytes, over the {cap} byte limit (WORKER_MAX_AUDIO_BYTES); "
        "send a shorter or more compressed file"
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
                f"audio_base64: data URI media type {media_type or '(missing)'!r} is not audio; "
                "use e.g. data:audio/wav;base64,..."
            )
        payload = payload[match.end() :]
    payload = re.sub(r"\s+", "", payload)
    if not payload:
        raise JobError("audio_base64: the payload is empty")
    if len(payload) // 4 * 3 > max_bytes:
        raise _size_error("audio_base64 decodes to about", len(payload) // 4 * 3, max_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise JobError(f"audio_base64: not valid base64 ({err})") from None


def read_confined_path(raw_path: str, roots: list[Path], max_bytes: int) -> bytes:
    """Read a file that, after resolving symlinks and '..', lies under one of `roots`."""
    try:
        path = Path(raw_path).expanduser().resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise JobError(f"audio_path: no such file: {raw_path!r}") from None
    resolved_roots = [root.resolve() for root in roots]
    if not any(path.is_relative_to(root) for root in resolved_roots):
        allowed = ", ".join(str(r) for r in resolved_roots)
        raise JobError(
            f"audio_path: {raw_path!r} is outside the allowed directories ({allowed}); "
            "set WORKER_PATH_ROOTS to allow another"
        )
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise JobError(f"audio_path: {raw_path!r} is not a regular file")
    if info.st_size > max_bytes:
        raise _size_error(f"audio_path {raw_path!r}", info.st_size, max_bytes)
    with path.open("rb") as file:
        return file.read(max_bytes + 1)


def download_url(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """Download an untrusted URL with runpod-python's SSRF guard, a byte cap and a total deadline."""
    # Imported here: pulling in the runpod HTTP stack is only needed for URL jobs.
    import requests
    from runpod.serverless.utils.rp_ssrf import SSRFError, iter_content_capped, safe_get

    deadline = time.monotonic() + timeout_s
    try:
        response = safe_get(url, timeout=max(1, int(timeout_s)), max_bytes=max_bytes)
    except SSRFError as err:
        if "size cap" in str(err):
            raise _size_error("audio_url body", "over", max_bytes) from None
        raise JobError(f"audio_url refused: {err}") from None
    except requests.Timeout:
        raise JobError(f"audio_url: the server did not answer within {timeout_s:g} s (WORKER_URL_TIMEOUT_SECONDS)") from None
    except requests.RequestException as err:
        raise JobError(f"audio_url: could not fetch {url!r}: {type(err).__name__}: {err}") from None
    with response:
        if response.status_code >= 400:
            raise JobError(f"audio_url: the server answered HTTP {response.status_code} for {url!r}")
        body = bytearray()
        try:
            for chunk in iter_content_capped(response, 64 * 1024, max_bytes):
                body += chunk
                if time.monotonic() > deadline:
                    raise JobError(
                        f"audio_url: download took longer than {timeout_s:g} s (WORKER_URL_TIMEOUT_SECONDS)"
                    )
        except SSRFError:
            raise _size_error("audio_url body", "over", max_bytes) from None
        except requests.RequestException as err:
            raise JobError(f"audio_url: download failed: {type(err).__name__}: {err}") from None
    if not body:
        raise JobError(f"audio_url: {url!r} returned an empty body")
    return bytes(body)
