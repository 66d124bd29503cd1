"""The training step: staleness guard, consumed ids, schedule, old log-probs."""

import itertools
import math

import numpy as np
import pytest
import torch
from trainer_helpers import random_samples, same_weights, tiny_settings, weights_snapshot

from services.bus.messages import RolloutSample
from trainer.engine import PolicyTrainer, lr_lambda
from trainer.settings import OptimizerSettings


def test_stale_samples_are_dropped_counted_and_never_trained(tmp_path):
    trainer = PolicyTrainer(tiny_settings(tmp_path, batching={"max_off_policy_steps": 2}))
    trainer.step = 5  # the policy is at version 5
    stale = random_samples(4, seed=1, version=2, prefix="stale")  # lag 3 > 2
    before = weights_snapshot(trainer.model)
    m = trainer.train_step(stale)
    assert m["dropped_stale"] == 4 and m["num_samples"] == 0
    assert same_weights(before, weights_snapshot(trainer.model)) and trainer.step == 5

    fresh = random_samples(3, seed=2, version=3, prefix="fresh")  # lag 2: allowed
    m = trainer.train_step(stale + fresh)
    assert (m["dropped_stale"], m["num_samples"]) == (4, 3)
    assert m["policy_lag_max"] == 2 and trainer.step == 6
    assert not same_weights(before, weights_snapshot(trainer.model))
    assert not trainer.consumed_ids & {s.rollout_id for s in stale}


def test_a_rollout_id_is_trained_at_most_once(tmp_path):
    trainer = PolicyTrainer(tiny_settings(tmp_path))
    batch = random_samples(4, seed=3)
    m = trainer.train_step(batch + batch[:1])  # a duplicate inside the batch too
    assert (m["num_samples"], m["dropped_duplicate"]) == (4, 1)
    after_first = weights_snapshot(trainer.model)
    m = trainer.train_step(batch)  # redelivered
    assert (m["num_samples"], m["dropped_duplicate"]) == (0, 4)
    assert same_weights(after_first, weights_snapshot(trainer.model)) and trainer.step == 1


def test_warmup_then_constant_or_cosine():
    const = lr_lambda(OptimizerSettings(lr=1.0, warmup_steps=4, schedule="constant"))
    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = lr_lambda(OptimizerSettings(lr=1.0, warmup_steps=2, schedule="cosine", total_steps=12, min_lr_ratio=0.1))
    assert cos(0) == 0.5 and cos(2) == 1.0
    assert math.isclose(cos(7), 0.1 + 0.9 * 0.5)  # half-way through the decay
    assert math.isclose(cos(12), 0.1) and math.isclose(cos(50), 0.1)
    values = [cos(s) for s in range(2, 13)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_reported_lr_and_step_counts_follow_epochs_and_mini_batches(tmp_path):
    settings = tiny_settings(
        tmp_path,
        optimizer={"lr": 1e-3, "warmup_steps": 4},
        batching={"ppo_epochs": 2, "mini_batches": 3, "shuffle": True},
    )
    trainer = PolicyTrainer(settings)
    m = trainer.train_step(random_samples(9, seed=4))
    assert m["optimizer_steps"] == 6 and trainer.optimizer_steps == 6 and trainer.version == 1
    # mean lr used over the 6 steps: warm-up 1/4, 2/4, 3/4, then 1, 1, 1
    assert math.isclose(m["lr"], 1e-3 * (0.25 + 0.5 + 0.75 + 3) / 6, rel_tol=1e-6)
    assert m["grad_norm"] > 0 and m["grad_norm_max"] >= m["grad_norm"]


def _on_policy_samples(trainer: PolicyTrainer, n: int, seed: int) -> list[RolloutSample]:
    """Samples whose behaviour log-probs are the trainer's own (engine == trainer)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    lm = trainer.model
    with torch.no_grad():
        for i in range(n):
            prompt = torch.randint(0, 64, (3,), generator=gen)
            comp = torch.randint(0, 64, (4,), generator=gen)
            ids = torch.cat([prompt, comp]).unsqueeze(0)
            logp = torch.log_softmax(lm(ids).logits[0, 2:-1].float(), -1)
            lp = logp.gather(1, comp.unsqueeze(1)).squeeze(1)
            out.append(
                RolloutSample.build(
                    rollout_id=f"on-{seed}-{i}", prompt_ids=prompt.numpy(), completion_ids=comp.numpy(),
                    behaviour_logprobs=lp.numpy(), token_versions=np.zeros(4), reward=1.0,
                    advantage=float(i % 2) - 0.5,
                )
            )
    return out


def test_recompute_matches_behaviour_when_engine_and_trainer_agree(tmp_path):
    trainer = PolicyTrainer(tiny_settings(tmp_path, batching={"old_logprobs": "recompute", "tis_cap": 2.0}))
    m = trainer.train_step(_on_policy_samples(trainer, 6, seed=5))
    assert m["behaviour_old_abs_logprob_diff"] < 1e-5


def test_truncated_is_weight_caps_the_engine_trainer_mismatch(tmp_path):
    """With behaviour log-probs 3 nats below the trainer's, TIS weight min(e^3, cap)
    scales every token's gradient by the cap: the gradient is cap x the one without TIS."""
    samples = []
    base = PolicyTrainer(tiny_settings(tmp_path, batching={"old_logprobs": "recompute"}))
    for s in _on_policy_samples(base, 4, seed=6):
        samples.append(RolloutSample.build(
            rollout_id=s.rollout_id, prompt_ids=s.prompt, completion_ids=s.completion,
            behaviour_logprobs=s.logprobs - 3.0, token_versions=s.versions, reward=s.reward, advantage=s.advantage,
        ))
    grads = {}
    for cap in (None, 2.0):
        t = PolicyTrainer(tiny_settings(tmp_path, batching={"old_logprobs": "recompute", "tis_cap": cap}))
        from trainer import batching

        seqs, _ = t._recompute_old_logprobs([batching.to_sequence(s) for s in samples])
        t.accumulate_gradients(seqs)
        grads[cap] = torch.cat([p.grad.flatten() for p in t.params])
    assert torch.allclose(grads[2.0], 2.0 * grads[None], atol=1e-6, rtol=1e-4)
    assert grads[None].abs().sum() > 0


def test_kl_to_a_frozen_reference_needs_and_builds_one(tmp_path):
    trainer = PolicyTrainer(
        tiny_settings(tmp_path, loss={"name": "grpo", "hparams": {"loss_agg_mode": "token-mean", "kl_coef": 0.1}})
    )
    assert trainer.reference is not None
    ref_before = weights_snapshot(trainer.reference)
    trainer.train_step(random_samples(4, seed=8))
    assert same_weights(ref_before, weights_snapshot(trainer.reference))
    assert not same_weights(ref_before, weights_snapshot(trainer.model))


@pytest.mark.parametrize("bad", ["nope"])
def test_unknown_loss_name_is_refused_naming_the_field(tmp_path, bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="loss.name"):
        tiny_settings(tmp_path, loss={"name": bad, "hparams": {}})


@pytest.mark.parametrize("tied", [True, False])
def test_completion_logprobs_match_the_models_own_logits(tmp_path, tied):
    """Hidden states + LM-head weight (tied or not) + temperature give what
    log_softmax(model(...).logits / T) gives, at completion positions only."""
    from trainer_helpers import TINY_MODEL

    from trainer import batching
    from trainer.model import completion_logprobs

    settings = tiny_settings(tmp_path, model={"config": {**TINY_MODEL, "tie_word_embeddings": tied}})
    trainer = PolicyTrainer(settings)
    seqs = [batching.to_sequence(s) for s in random_samples(5, seed=11)]
    mb = batching.collate(seqs, list(range(5)))
    with torch.no_grad():
        lp, ent = completion_logprobs(trainer.model, mb, temperature=0.7, chunk_size=7)
        logits = trainer.model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits / 0.7
        full = torch.log_softmax(logits.float(), -1)
    for r, s in enumerate(seqs):
        p, t = s.prompt_len, s.completion_len
        expected = full[r, p - 1 : p - 1 + t].gather(1, torch.from_numpy(s.input_ids[p:]).unsqueeze(1)).squeeze(1)
        assert torch.allclose(lp[r, :t], expected, atol=1e-5)
        expected_ent = -(full[r, p - 1 : p - 1 + t].exp() * full[r, p - 1 : p - 1 + t]).sum(-1)
        assert torch.allclose(ent[r, :t], expected_ent, atol=1e-5)
        assert torch.all(lp[r, t:] == 0)


def test_bf16_autocast_step_runs_with_fp32_master_weights(tmp_path):
    trainer = PolicyTrainer(tiny_settings(tmp_path, model={"autocast": "bfloat16"}))
    before = weights_snapshot(trainer.model)
    m = trainer.train_step(random_samples(4, seed=12))
    assert math.isfinite(m["loss"]) and m["grad_norm"] > 0
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert not same_weights(before, weights_snapshot(trainer.model))
