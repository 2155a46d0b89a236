"""Put a Voxtral model's transformers files into one directory, and check them (image build step).

    python builder/fetch_weights.py --model-id mistralai/Voxtral-Mini-3B-2507 --target /models/voxtral \
        [--token-file /run/secrets/hf_token] [--revision REV]

`--model-id` is a Hugging Face Hub id (downloaded with huggingface_hub.snapshot_download) or an
existing local directory (its files are copied; `--target` may be the same directory, which only
validates it). Only what transformers loads is taken: *.json (config, generation and processor
configs, the shard index, tekken.json), *.jinja, and model*.safetensors. The Hub repo also holds
consolidated.safetensors (the same weights in Mistral's native format, ~9 GB): it is left out.

The result must hold config.json with model_type "voxtral", the weights (model*.safetensors, or a
model.safetensors.index.json whose shards all exist), every shard a well-formed safetensors file,
and tekken.json. Otherwise the script exits 1 and names what is wrong.

The token comes from --token-file (the BuildKit secret mount) or else HF_TOKEN; it is never
printed. A missing or empty token file means "no token" (the default model is public).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

WEIGHTS_PATTERN = "model*.safetensors"  # transformers' names; consolidated*.safetensors is Mistral's format
ALLOW_PATTERNS: tuple[str, ...] = ("*.json", "*.jinja", WEIGHTS_PATTERN)
INDEX_NAME = "model.safetensors.index.json"
EXPECTED_MODEL_TYPE = "voxtral"
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors caps its JSON header at 100 MB


class FetchError(Exception):
    """A problem the user must fix; the message is printed as is."""


def log(message: str) -> None:
    print(f"fetch_weights: {message}", file=sys.stderr, flush=True)


def read_token(token_file: Path | None) -> str | None:
    if token_file is not None and token_file.is_file():
        token = token_file.read_text(encoding="utf-8").strip()
        if token:
            log(f"using the Hugging Face token from {token_file}")
            return token
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        log("using the Hugging Face token from HF_TOKEN")
        return token
    log("no Hugging Face token given: anonymous download (enough for public models)")
    return None


def is_local_model_id(model_id: str) -> bool:
    """A directory that exists, or anything spelled like a path rather than an `org/name` hub id."""
    if Path(model_id).expanduser().exists():
        return True
    return model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1


def _wanted(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in ALLOW_PATTERNS)


def copy_local(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise FetchError(f"local model directory not found: {source}")
    if source.resolve() == target.resolve():
        log(f"{source} is the target itself: validating only")
        return
    target.mkdir(parents=True, exist_ok=True)
    resolved_target = target.resolve()
    copied = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.resolve().is_relative_to(resolved_target):  # target nested inside source
            continue
        if not _wanted(relative.as_posix()):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        copied += 1
    log(f"copied {copied} file(s) from {source} to {target}")


def download(model_id: str, target: Path, revision: str | None, token: str | None) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise FetchError("huggingface_hub is not installed: `pip install huggingface_hub`") from err
    log(f"downloading {model_id} (revision {revision or 'default'}) into {target}")
    try:
        snapshot_download(
            repo_id=model_id,
            revision=revision,
            local_dir=target,
            allow_patterns=list(ALLOW_PATTERNS),
            token=token,
        )
    except Exception as err:  # noqa: BLE001 - any hub failure ends the build with its reason
        message = str(err)
        if token:
            message = message.replace(token, "***")
        raise FetchError(f"download of {model_id!r} failed: {type(err).__name__}: {message}") from None
    # snapshot_download keeps resume metadata in <target>/.cache/huggingface: not needed in the image.
    shutil.rmtree(target / ".cache" / "huggingface", ignore_errors=True)
    cache = target / ".cache"
    if cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()


def _safetensors_problem(path: Path) -> str | None:
    """None if `path` is a complete safetensors file (header parses, data size matches), else why not."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is not a safetensors file ({size} bytes)"
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
            return f"{path.name} is not a safetensors file (bad header length; a Git LFS pointer or a truncated file?)"
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path.name} is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return f"{path.name} is not a safetensors file (its header is not a JSON object)"
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"{path.name}: tensor {name!r} has no valid data_offsets"
        data_end = max(data_end, offsets[1])
    if 8 + header_len + data_end != size:
        actual = size - 8 - header_len
        return f"{path.name} is truncated or padded: its header promises {data_end} data bytes, it holds {actual}"
    return None


def _load_json(path: Path, problems: list[str]) -> object | None:
    try:
        data: object = json.loads(path.read_text(encoding="utf-8"))
        return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{path.name} is not valid JSON ({err})")
        return None


def validate(model_dir: Path) -> list[str]:
    """Every problem found with `model_dir` as a transformers Voxtral directory; empty when it is fine."""
    problems: list[str] = []
    if not model_dir.is_dir():
        return [f"{model_dir} is not a directory"]

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        problems.append("missing config.json")
    else:
        config = _load_json(config_path, problems)
        if config is not None:
            model_type = config.get("model_type") if isinstance(config, dict) else None
            if model_type != EXPECTED_MODEL_TYPE:
                problems.append(f"config.json has model_type {model_type!r}, expected {EXPECTED_MODEL_TYPE!r}")

    index_path = model_dir / INDEX_NAME
    shards: list[Path]
    if index_path.is_file():
        index = _load_json(index_path, problems)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if index is not None and (not isinstance(weight_map, dict) or not weight_map):
            problems.append(f"{INDEX_NAME} has no weight_map")
        names = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        missing = [name for name in names if not (model_dir / name).is_file()]
        if missing:
            problems.append(f"{INDEX_NAME} lists shard(s) that are missing: {', '.join(missing)}")
        shards = [model_dir / name for name in names if name not in missing]
    else:
        shards = sorted(model_dir.glob(WEIGHTS_PATTERN))
        if not shards:
            problems.append(f"no weights: no {WEIGHTS_PATTERN} file and no {INDEX_NAME}")
    for shard in shards:
        problem = _safetensors_problem(shard)
        if problem:
            problems.append(problem)

    tekken = model_dir / "tekken.json"
    if not tekken.is_file():
        problems.append("missing tekken.json (the Mistral tokenizer)")
    else:
        _load_json(tekken, problems)

    processor_files = ("preprocessor_config.json", "processor_config.json")
    if not problems and not any((model_dir / name).is_file() for name in processor_files):
        log("warning: no preprocessor_config.json or processor_config.json: the processor will use its defaults")
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model-id", required=True, help="Hugging Face Hub id, or a local model directory")
    parser.add_argument("--target", required=True, type=Path, help="directory to fill (created if needed)")
    parser.add_argument("--token-file", type=Path, help="file holding a Hugging Face token (BuildKit secret)")
    parser.add_argument("--revision", help="hub branch, tag or commit (hub ids only)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    target: Path = args.target.expanduser()
    try:
        if is_local_model_id(args.model_id):
            if args.revision:
                log(f"--revision {args.revision!r} is ignored for a local directory")
            copy_local(Path(args.model_id).expanduser(), target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            download(args.model_id, target, args.revision, read_token(args.token_file))
    except FetchError as err:
        log(f"error: {err}")
        return 1
    problems = validate(target)
    if problems:
        log(f"error: {target} is not a usable Voxtral model directory:")
        for problem in problems:
            log(f"  - {problem}")
        return 1
    files = sorted(p for p in target.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    log(f"ok: {target} holds {len(files)} file(s), {total / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
