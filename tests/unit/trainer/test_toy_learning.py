"""A tiny random-init transformer learns a token bandit with aspo, grpo and dapo.

The model samples its own completions (torch.multinomial over its logits,
behaviour log-probs recorded as an inference engine would), the test scores
them (reward 1 if the first completion token is one of 4 target tokens out
of 64: chance 1/16) and computes GRPO group advantages, and the trainer
trains on them with two mini-batches per rollout batch (so the second
optimizer step is off-policy). The probability of a target token must go
from chance to > 0.9.
"""

import sys

import pytest
import torch
from trainer_helpers import next_token_probs, sample_groups, tiny_settings

from trainer.engine import PolicyTrainer

TARGETS = [5, 17, 42, 60]


def _reward(prompt, completion) -> float:
    return float(int(completion[0]) in TARGETS)


@pytest.mark.parametrize("loss", ["aspo", "grpo", "dapo"])
def test_tiny_model_learns_the_bandit(tmp_path, loss):
    settings = tiny_settings(
        tmp_path,
        loss={"name": loss, "hparams": {}},  # the loss's own defaults (dapo: token-mean, clip-higher)
        optimizer={"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0},
        batching={"mini_batches": 2, "shuffle": True, "max_off_policy_steps": 1},
    )
    trainer = PolicyTrainer(settings)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 64, (8, 4), generator=gen)
    start = float(next_token_probs(trainer.model, prompts)[:, TARGETS].sum(-1).mean())
    assert start < 0.15  # chance level (4/64), nothing learned yet
    history = []
    for step in range(40):
        batch, mean_reward = sample_groups(trainer.model, prompts, 8, 2, gen, trainer.version, _reward, f"s{step}")
        metrics = trainer.train_step(batch)
        assert metrics["dropped_stale"] == 0 and metrics["num_samples"] == 64
        history.append(mean_reward)
        p_target = float(next_token_probs(trainer.model, prompts)[:, TARGETS].sum(-1).mean())
        if p_target > 0.95:
            break
    print(f"{loss}: p(target) {start:.3f} -> {p_target:.3f} in {step + 1} steps", file=sys.stderr)
    assert p_target > 0.9
    assert sum(history[-3:]) / 3 > 0.8  # and the sampled rewards follow
