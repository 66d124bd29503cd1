"""The paper's core claim on a toy (arXiv 2510.06062, section 3).

With several optimizer steps per rollout batch (3 epochs x 2 mini-batches)
the IS ratio departs from 1. GRPO weights a positive-advantage token's
gradient by r, ASPO by 1/r (flipped, soft-clipped). When a batch rewards both
a dominant token (p ~ 0.7) and a rare one (p ~ 0.03), the dominant one takes
probability mass from the rare one (its r falls below 1): GRPO then shrinks
the rare token's update, ASPO enlarges it. So, on the same data and seed:
  1. rare positive-advantage tokens gain more log-prob under ASPO;
  2. the policy entropy falls more slowly under ASPO.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import next_token_probs, sample_groups, tiny_settings

from trainer.engine import PolicyTrainer

REWARDED = (0, 3)  # the dominant token and a rare one
SHAPE = {0: 0.7, 1: 0.15, 2: 0.1, 3: 0.03}


def _reward(prompt, completion) -> float:
    return float(int(completion[0]) in REWARDED)


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    """A tiny model whose first-token distribution is skewed like a trained LM's."""
    torch.set_num_threads(1)  # module-scoped: runs before the autouse fixture
    run = tmp_path_factory.mktemp("shape")
    model = PolicyTrainer(tiny_settings(run)).model
    prompts = torch.randint(0, 64, (8, 4), generator=torch.Generator().manual_seed(0))
    target = torch.full((64,), (1 - sum(SHAPE.values())) / (64 - len(SHAPE)))
    for tok, p in SHAPE.items():
        target[tok] = p
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        logp = torch.log_softmax(model(input_ids=prompts).logits[:, -1], -1)
        loss = -(target * logp).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prompts, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _trainer(run: Path, loss: str, weights) -> PolicyTrainer:
    settings = tiny_settings(
        run,
        loss={"name": loss, "hparams": {}},  # each loss's own defaults (eps 0.2, dual clip 3)
        optimizer={"lr": 3e-3, "warmup_steps": 0, "weight_decay": 0.0},
        batching={"ppo_epochs": 3, "mini_batches": 2, "shuffle": True, "max_off_policy_steps": None},
    )
    trainer = PolicyTrainer(settings)
    trainer.model.load_state_dict(weights)
    return trainer


def _entropy(model, prompts) -> float:
    p = next_token_probs(model, prompts)
    return float(-(p * p.log()).sum(-1).mean())


def test_aspo_lifts_rare_positive_tokens_more_and_keeps_entropy_longer(tmp_path, shaped):
    prompts, weights = shaped
    first = _trainer(tmp_path, "grpo", weights)
    batch, _ = sample_groups(first.model, prompts, 16, 1, torch.Generator().manual_seed(1), 0, _reward, "b0")
    rare = [s for s in batch if s.advantage > 0 and float(s.logprobs[0]) < torch.log(torch.tensor(0.1))]
    assert len(rare) >= 3, "the batch must contain rare positive-advantage tokens"

    gain, entropy = {}, {}
    for loss in ("aspo", "grpo"):
        trainer = _trainer(tmp_path, loss, weights)
        m = trainer.train_step(batch)
        assert m["optimizer_steps"] == 6
        after = torch.log(next_token_probs(trainer.model, torch.tensor(np.stack([s.prompt for s in rare]), dtype=torch.long)))
        picked = after[torch.arange(len(rare)), [int(s.completion[0]) for s in rare]]
        gain[loss] = float((picked - torch.tensor([float(s.logprobs[0]) for s in rare])).mean())
        # one more rollout batch from each policy's own samples, same seed
        more, _ = sample_groups(trainer.model, prompts, 16, 1, torch.Generator().manual_seed(2), 1, _reward, "b1")
        trainer.train_step(more)
        entropy[loss] = _entropy(trainer.model, prompts)

    print(f"rare-token log-prob change {gain}, entropy after 2 steps {entropy}", file=sys.stderr)
    assert gain["aspo"] > gain["grpo"] + 0.1
    assert entropy["aspo"] > entropy["grpo"]
