"""Helpers for the trainer tests: tiny random-init Llama settings, samples, weight snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.bus.messages import RolloutSample

TINY_MODEL = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def tiny_settings(run_dir: Path, **sections: Any):
    """TrainerSettings for a tiny CPU model; ``sections`` override whole sections' fields."""
    from trainer.settings import TrainerSettings

    data: dict[str, Any] = {
        "run_dir": run_dir,
        "device": "cpu",
        "model": {"config": dict(TINY_MODEL), "seed": 0},
        "optimizer": {"lr": 1e-3, "warmup_steps": 0, "weight_decay": 0.0},
        "loss": {"name": "grpo", "hparams": {"loss_agg_mode": "token-mean"}},
        "batching": {"micro_batch_tokens": 4096, "max_off_policy_steps": None, "shuffle": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainerSettings(**data)


def random_samples(
    n: int,
    seed: int = 0,
    vocab: int = 64,
    prompt_len: tuple[int, int] = (2, 6),
    completion_len: tuple[int, int] = (1, 9),
    version: int = 0,
    prefix: str = "r",
) -> list[RolloutSample]:
    """Samples of varied lengths with random advantages and plausible behaviour log-probs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = int(rng.integers(*prompt_len))
        t = int(rng.integers(*completion_len))
        out.append(
            RolloutSample.build(
                rollout_id=f"{prefix}{seed}-{i}",
                prompt_ids=rng.integers(0, vocab, p),
                completion_ids=rng.integers(0, vocab, t),
                behaviour_logprobs=-rng.uniform(3.5, 4.8, t),
                token_versions=np.full(t, version),
                reward=float(rng.integers(0, 2)),
                advantage=float(rng.normal()),
            )
        )
    return out


def weights_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def sample_groups(
    model: torch.nn.Module,
    prompts: torch.Tensor,  # (G, P) int64
    n: int,
    length: int,
    gen: torch.Generator,
    version: int,
    reward_fn,  # (prompt (P,), completion (length,)) -> float
    tag: str,
) -> tuple[list[RolloutSample], float]:
    """Sample ``n`` completions per prompt from the model itself (torch.multinomial
    over its own logits, temperature 1), record behaviour log-probs, score them
    and give GRPO group advantages (r - mean) / (std + 1e-6). Returns the
    samples and the mean reward."""
    was_training = model.training
    model.eval()
    g, p = prompts.shape
    ids = prompts.repeat_interleave(n, dim=0)  # (G*n, P)
    logps = []
    for _ in range(length):
        logits = model(input_ids=ids).logits[:, -1].float()
        logp = torch.log_softmax(logits, -1)
        tok = torch.multinomial(logp.exp(), 1, generator=gen)  # (G*n, 1)
        logps.append(logp.gather(1, tok))
        ids = torch.cat([ids, tok], dim=1)
    model.train(was_training)
    completions, behaviour = ids[:, p:], torch.cat(logps, dim=1)
    rewards = torch.tensor([reward_fn(ids[i, :p], completions[i]) for i in range(g * n)]).view(g, n)
    adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)
    samples = [
        RolloutSample.build(
            rollout_id=f"{tag}-{i}",
            prompt_ids=ids[i, :p].numpy(),
            completion_ids=completions[i].numpy(),
            behaviour_logprobs=behaviour[i].numpy(),
            token_versions=np.full(length, version),
            reward=float(rewards.view(-1)[i]),
            advantage=float(adv.view(-1)[i]),
        )
        for i in range(g * n)
    ]
    return samples, float(rewards.mean())


@torch.no_grad()
def next_token_probs(model: torch.nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """(G, V) probabilities of the first completion token for each prompt."""
    return torch.softmax(model(input_ids=prompts).logits[:, -1].float(), -1)
