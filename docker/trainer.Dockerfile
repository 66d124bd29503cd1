# The trainer on GPUs: FSDP2 under torchrun (trainer/distributed.py).
# Tested on CPU only (torch 2.13 with gloo); this base pins torch 2.9.0 + CUDA 12.8.
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

WORKDIR /opt/aspo
COPY pyproject.toml README.md ./
COPY aspo aspo
COPY services services
COPY sandbox sandbox
COPY orchestrator orchestrator
COPY trainer trainer
# torch comes from the base image; pip keeps it (the extra asks for torch>=2.4).
RUN pip install --no-cache-dir ".[trainer]"

RUN useradd --create-home --uid 1000 aspo && mkdir -p /data && chown aspo:aspo /data
USER aspo
EXPOSE 8100
CMD ["torchrun", "--standalone", "--nproc-per-node=gpu", "--no-python", "aspo", "trainer", "serve", "--help"]
