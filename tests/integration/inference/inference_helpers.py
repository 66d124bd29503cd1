"""Helpers for the vLLM integration tests: free ports, perturbed checkpoints, reference log-probs."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def perturbed_copy(
    src: Path, dst: Path, scale: float = 0.05, layers: tuple[int, ...] = (1, 2, 3)
) -> Path:
    """A new version dir: ``src`` with Gaussian noise on the matrices of some layers."""
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    tensors = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(1234)
    for name, t in tensors.items():
        if t.ndim == 2 and any(f"layers.{i}." in name for i in layers):
            tensors[name] = t + scale * t.std() * torch.randn(t.shape, generator=gen)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


_REF_MODELS: dict[str, object] = {}


def reference_logprobs(
    model_dir: Path, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0
) -> list[float]:
    """log pi_T(token_t | prefix) from a full fp32 transformers forward on prompt + completion,
    with pi_T = softmax(logits / T): what vLLM's processed_logprobs mean at temperature T."""
    import torch
    from transformers import AutoModelForCausalLM

    key = str(model_dir)
    if key not in _REF_MODELS:
        if len(_REF_MODELS) >= 2:  # at most two reference models (old/new weights) in memory
            _REF_MODELS.pop(next(iter(_REF_MODELS)))
        _REF_MODELS[key] = AutoModelForCausalLM.from_pretrained(key, dtype=torch.float32).eval()
    model = _REF_MODELS[key]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]  # (T, V): predicts completion
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        picked = logp.gather(1, torch.tensor(completion_ids)[:, None])[:, 0]
    return picked.tolist()
