# syntax=docker/dockerfile:1
#
# RunPod serverless image: Voxtral (transformers, CUDA, bf16, flash-attention 2, torch.compile) with
# its weights baked in, plus the embedded CPU engines as the fallback. Build with BuildKit:
#
#   docker buildx build --platform linux/amd64 \
#       --secret id=hf_token,env=HF_TOKEN \
#       --build-arg MODEL_ID=mistralai/Voxtral-Mini-3B-2507 -t voxtral-worker .
#
# The Hugging Face token reaches the build only as a BuildKit secret (a file under /run/secrets, in
# one RUN step of the weights stage): never as ARG or ENV, so it is in no layer and no image history.

# --------------------------------------------------------------------------------------------------
# Stage 1: the model weights. A small stage of its own, so that a requirements bump never downloads
# the ~9 GB again, and the secret is mounted in no stage that ships.
# --------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS weights

ARG HF_HUB_VERSION=2.4.0
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --disable-pip-version-check "huggingface_hub==${HF_HUB_VERSION}"

COPY builder/fetch_weights.py /opt/builder/fetch_weights.py

ARG MODEL_ID=mistralai/Voxtral-Mini-3B-2507
# A branch, tag or commit of MODEL_ID; pin a commit for reproducible images.
ARG MODEL_REVISION=main
RUN --mount=type=secret,id=hf_token \
    python /opt/builder/fetch_weights.py \
        --model-id "${MODEL_ID}" \
        --revision "${MODEL_REVISION}" \
        --target /models/voxtral \
        --token-file /run/secrets/hf_token

# --------------------------------------------------------------------------------------------------
# Stage 2: the worker.
#
# Base image: nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 rather than runpod/pytorch. The runpod/
# pytorch images bring their own torch, Python and tooling (Jupyter, SSH; "devel" CUDA with nvcc,
# well over 10 GB), and we pin torch ourselves (builder/requirements-cuda.txt). The official CUDA
# runtime image is the smallest CUDA base NVIDIA maintains; its CUDA 12.8 matches the cu128 torch
# wheels, and its NVIDIA_REQUIRE_CUDA=cuda>=12.8 makes a host with a too-old driver refuse the
# container at once instead of failing at the first kernel (.runpod/hub.json allows CUDA >= 12.8
# hosts only). cuDNN 9 there also serves CTranslate2 (faster-whisper) should it ever run on GPU.
# Ubuntu 22.04 (glibc 2.35) is what the flash-attn wheels are built on.
# --------------------------------------------------------------------------------------------------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10). python3.11-dev and build-essential
# are runtime needs, not only build ones: Triton (torch.compile) compiles a small C launcher against
# Python.h with the system C compiler on first use. They also build llama-cpp-python below.
# The CUDA apt repository of the base image is dropped: nothing comes from it and its signing keys
# have expired before. Package versions are not pinned: they are whatever Ubuntu's security updates
# hold on the build day (hadolint DL3008).
# hadolint ignore=DL3008
RUN rm -f /etc/apt/sources.list.d/cuda*.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential \
        python3.11 \
        python3.11-dev \
        python3.11-venv \
    && apt-get purge -y --auto-remove software-properties-common gpg-agent \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
RUN python3.11 -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir pip==26.3

# The weights layer comes early, so code and dependency changes leave it (and RunPod hosts' cached
# copy of it) untouched.
COPY --from=weights /models/voxtral /models/voxtral

# 1. CUDA torch (pinned, with its index URL, in builder/requirements-cuda.txt).
COPY builder/requirements-cuda.txt /opt/builder/requirements-cuda.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /opt/builder/requirements-cuda.txt

# 2. flash-attn from a PREBUILT wheel (building it from source takes hours and needs nvcc).
# How the asset was chosen: flash-attention's release workflow (.github/workflows/publish.yml at
# tag v2.8.3.post1, the newest v* tag) builds torch 2.4.0 / 2.5.1 / 2.6.0 / 2.7.1 / 2.8.0 x
# Python 3.9-3.13 x cxx11abi TRUE/FALSE, with CUDA 12.9.1, and attaches them to the GitHub release
# named after the tag. setup.py's get_wheel_url() names them
#   flash_attn-{version}+cu{CUDA major}torch{torch major.minor}cxx11abi{TRUE|FALSE}-{cpXY}-{cpXY}-linux_x86_64.whl
# under https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/ ; "cu12" serves
# any CUDA 12.x torch. So: torch 2.8 (the newest covered; requirements-cuda.txt pins 2.8.0+cu128),
# cu12, cp311, and cxx11abiTRUE because torch >= 2.7 pip wheels are built with the C++11 ABI (the
# RUN asserts it before installing: a mismatch fails at import with an undefined c10 symbol).
# Built with CUDA 12.9, the wheel carries sm80/sm90/sm100/sm120 kernels: every Ampere, Ada, Hopper
# and Blackwell GPU (Ada cards run the sm80 ones).
ARG FLASH_ATTN_VERSION=2.8.3.post1
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import torch, sys; sys.exit(0 if torch._C._GLIBCXX_USE_CXX11_ABI else 'torch is not cxx11abi: use the cxx11abiFALSE wheel')" \
    && pip install --no-deps \
        "https://github.com/Dao-AILab/flash-attention/releases/download/v${FLASH_ATTN_VERSION}/flash_attn-${FLASH_ATTN_VERSION}+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"

# 3. The worker's own pins. torch, triton and the nvidia-* CUDA libraries are frozen as constraints
# first, so no requirement can swap the CUDA torch for another build.
# llama-cpp-python compiles here: GGML_NATIVE=OFF with AVX2/FMA/F16C gives a binary that runs on any
# x86-64 server CPU, not only on the build machine's (-march=native would be the default).
COPY builder/requirements.txt builder/requirements-voxtral.txt builder/requirements-nodeps.txt /opt/builder/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip freeze | grep -iE '^(torch|triton|nvidia-[a-z0-9-]+)==' > /opt/builder/cuda-constraints.txt \
    && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
        pip install -c /opt/builder/cuda-constraints.txt \
            -r /opt/builder/requirements.txt \
            -r /opt/builder/requirements-voxtral.txt \
    && pip install --no-deps -r /opt/builder/requirements-nodeps.txt

# Fail the build, not the first job, if the CUDA stack is inconsistent (imports need no GPU).
RUN python -c "import torch, flash_attn, transformers; \
assert torch.version.cuda and torch.version.cuda.startswith('12.'), torch.version.cuda; \
from transformers import VoxtralForConditionalGeneration; \
print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| flash_attn', flash_attn.__version__, '| transformers', transformers.__version__)"

# Runtime settings: load the baked weights, never reach the Hub at run time. The inductor/Triton
# cache sits at a fixed path; point TORCHINDUCTOR_CACHE_DIR at the network volume
# (/runpod-volume/...) to share compiled kernels across workers and cold starts.
ENV WORKER_VOXTRAL_MODEL=/models/voxtral \
    WORKER_VOXTRAL_LOCAL_FILES_ONLY=true \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TORCHINDUCTOR_CACHE_DIR=/var/cache/torchinductor
RUN mkdir -p "${TORCHINDUCTOR_CACHE_DIR}"

WORKDIR /app
COPY handler.py test_input.json ./
COPY worker/ ./worker/
COPY samples/ ./samples/

CMD ["python", "-u", "handler.py"]
