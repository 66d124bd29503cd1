"""Publishing the policy for inference: ``<run>/policy/v<N>``.

Each version is a complete HF safetensors directory (config, weights,
generation config, tokenizer files when the source model has them) that vLLM
loads as is (``reload_weights`` with ``weights_path``). It is written to
``<run>/policy/.tmp-v<N>``, fsynced and renamed, so no reader ever sees a
partial directory; only then is ``PolicyVersion(version=N)`` announced. The
last K versions are kept (older ones are deleted: inference must have moved
on within K versions). With LoRA the adapters are merged into full weights
on the fly (W + scale * B A), leaving the training model untouched.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import torch

from trainer.checkpoint import atomic_install
from trainer.model import causal_lm, is_lora

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^v(\d+)$")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
)


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full weights of a peft LoRA model with the adapters folded in, plain HF key names."""
    from peft.tuners.lora import LoraLayer

    lm = causal_lm(model)
    merged: dict[str, torch.Tensor] = {}
    for name, module in lm.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            merged[f"{name}.weight"] = (base.weight + delta).detach()
    state: dict[str, torch.Tensor] = {}
    for key, value in lm.state_dict().items():
        if "lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        state[plain] = merged.get(plain, value)
    return state


def list_versions(policy_root: Path) -> list[tuple[int, Path]]:
    """Published versions under ``policy_root``, oldest first."""
    if not policy_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in policy_root.iterdir() if (m := _VERSION_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


@torch.no_grad()
def publish_policy(
    model: torch.nn.Module,
    policy_root: Path,
    version: int,
    keep_last: int,
    tokenizer_dir: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``policy_root/v<version>`` atomically and prune to the last ``keep_last``.

    ``state_dict`` replaces the model's own weights (FSDP2: the full weights
    gathered on rank 0, ``trainer.distributed``); the files are the same as
    ``save_pretrained()`` of the model itself (a tied LM head is left out).
    """
    policy_root.mkdir(parents=True, exist_ok=True)
    final = policy_root / f"v{version}"
    tmp = policy_root / f".tmp-v{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    lm = causal_lm(model)
    if state_dict is not None:
        if getattr(lm.config, "tie_word_embeddings", False):
            head = next(n for n, m in lm.named_modules() if m is lm.get_output_embeddings())
            state_dict = {k: v for k, v in state_dict.items() if k != f"{head}.weight"}
        lm.save_pretrained(tmp, state_dict=state_dict)
    elif is_lora(model):
        lm.save_pretrained(tmp, state_dict=merged_state_dict(model))
    else:
        lm.save_pretrained(tmp)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file():
                shutil.copy2(src, tmp / name)
    atomic_install(tmp, final)
    for _, old in list_versions(policy_root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("published policy %s", final)
    return final
