"""The policy model: loading, LoRA, the reference policy and completion log-probs.

Log-probs never go through ``model(...).logits``: the decoder's final hidden
states at the positions that predict completion tokens are gathered (N, H)
and passed with the LM-head weight to ``trainer.logprobs.token_logprobs``,
which works in chunks and never materialises (N, V) logits (the full-vocab
path took 11 GB for 16 x 192 tokens on the CPU machine, see field notes).
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from typing import Any

import torch

from trainer.batching import MicroBatch
from trainer.settings import ModelSettings

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def build_model(settings: ModelSettings, device: torch.device) -> torch.nn.Module:
    """Load (or random-init) the causal LM; wrap it with LoRA if enabled."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = resolve_dtype(settings.dtype)
    if settings.path is not None:
        model = AutoModelForCausalLM.from_pretrained(
            settings.path, dtype=dtype, attn_implementation=settings.attn_implementation
        )
    else:
        cfg: dict[str, Any] = dict(settings.config or {})
        model_type = cfg.pop("model_type", "llama")
        config = AutoConfig.for_model(model_type, **cfg)
        config._attn_implementation = settings.attn_implementation
        torch.manual_seed(settings.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.config.use_cache = False
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = settings.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
    return model.to(device)


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside a (possibly peft-wrapped) model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "get_base_model")


def build_reference(model: torch.nn.Module) -> torch.nn.Module | None:
    """A frozen reference policy for the KL term.

    With LoRA the reference is the same model with adapters disabled (no copy);
    otherwise a frozen deep copy of the initial weights (doubles weight memory).
    """
    if is_lora(model):
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def autocast_for(device: torch.device, mode: str) -> Any:
    """The compute-dtype context: bf16 autocast on GPU by default; fp32 on CPU
    (bf16 was 3x slower than fp32 on this CPU, field notes)."""
    if mode == "bfloat16" or (mode == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def completion_logprobs(
    model: torch.nn.Module, mb: MicroBatch, temperature: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs and entropies of the completion tokens, laid out (B, T).

    Padding positions hold 0 (masked out by ``mb.mask``). Differentiable when
    grad is enabled.
    """
    from trainer.logprobs import token_logprobs

    lm = causal_lm(model)
    decoder = lm.get_decoder()
    hidden = decoder(input_ids=mb.input_ids, attention_mask=mb.attention_mask).last_hidden_state  # (B, L, H)
    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.hidden_index)  # (N, H)
    weight = lm.get_output_embeddings().weight  # (V, H); the embedding matrix when tied
    flat = flat.to(weight.dtype)  # autocast may leave the final norm's output in another dtype
    lp, ent = token_logprobs(flat, weight, mb.target_ids, temperature=temperature, chunk_size=chunk_size)
    b, t = mb.mask.shape
    logprobs = torch.zeros(b * t, dtype=lp.dtype, device=lp.device).index_copy(0, mb.token_index, lp)
    entropy = torch.zeros(b * t, dtype=ent.dtype, device=ent.device).index_copy(0, mb.token_index, ent)
    return logprobs.view(b, t), entropy.view(b, t)


@torch.no_grad()
def reference_logprobs(
    model: torch.nn.Module, ref: torch.nn.Module | None, mb: MicroBatch, temperature: float, chunk_size: int
) -> torch.Tensor:
    """Log-probs under the reference policy (frozen copy, or LoRA disabled)."""
    if ref is not None:
        return completion_logprobs(ref, mb, temperature, chunk_size)[0]
    with model.disable_adapter():
        return completion_logprobs(model, mb, temperature, chunk_size)[0]
