# syntax=docker/dockerfile:1
# One image for every process of the studio: the web process and the workers (compose.yaml runs them all).
#   docker build -t ai-studio .                         # torch as a CUDA 12.8 build
#   docker build -t ai-studio --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .   # CPU only
#   docker run --gpus all -v studio-data:/data ai-studio worker
# The base adds no CUDA libraries of its own: torch's CUDA wheels bring theirs (CUDA runtime, cuBLAS, cuDNN as
# pip packages). It sets what the NVIDIA container toolkit reads to hand the GPUs and the driver in.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

# PyTorch's own index: requirements.txt pins torch as the CPU wheel the CI machines use; the same version
# from this index is a CUDA build and satisfies that pin, so the requirements install below keeps it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG STUDIO_UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    HF_HOME=/data/models/huggingface \
    GRADIO_ANALYTICS_ENABLED=False \
    STUDIO_DATA_DIR=/data

# Python (Ubuntu 24.04's 3.12) in a virtual environment; libGL and GLib for OpenCV (insightface). The
# folders a named volume mounted over them starts from belong to the studio user, who runs everything.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid "$STUDIO_UID" --user-group studio \
    && mkdir -p /data/files /data/models /data/gpu-locks "$NUMBA_CACHE_DIR" \
    && chown -R studio:studio /data "$NUMBA_CACHE_DIR"

WORKDIR /app
COPY requirements.txt ./
RUN pip install --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' requirements.txt)" \
    && pip install -r requirements.txt \
    && python -c "import sys, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
sys.exit(torch.version.cuda is None and '/whl/cpu' not in '$TORCH_INDEX_URL' and 'torch is not a CUDA build')"

COPY . .
USER studio
# rembg's matting code is compiled by numba on its first import (over a minute): once here, into a cache the
# studio user can keep using, not in a user's first background removal.
RUN python -c "import rembg"

VOLUME /data
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 CMD ["/app/scripts/entrypoint.sh", "health"]
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["web"]
