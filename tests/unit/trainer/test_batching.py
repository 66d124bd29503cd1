"""Packing into micro-batches and gradient accumulation with the global normaliser."""

import numpy as np
import pytest
import torch
from trainer_helpers import random_samples, tiny_settings

from services.bus.messages import RolloutSample
from trainer import batching


def test_plan_respects_padded_budget_and_keeps_every_sequence():
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.integers(1, 40, 50)]
    plans = batching.plan_micro_batches(lengths, token_budget=64)
    assert sorted(i for p in plans for i in p) == list(range(50))
    for p in plans:
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= 64


def test_sequence_longer_than_budget_gets_its_own_micro_batch():
    plans = batching.plan_micro_batches([100, 3, 3], token_budget=16)
    assert [0] in plans and sorted(i for p in plans for i in p) == [0, 1, 2]


def test_collate_places_completion_tokens_and_their_predicting_positions():
    seqs = [batching.to_sequence(s) for s in random_samples(5, seed=3)]
    mb = batching.collate(seqs, [0, 1, 2, 3, 4])
    flat = mb.input_ids.reshape(-1)
    # the token right after each predicting position is the target
    assert torch.equal(flat[mb.hidden_index + 1], mb.target_ids)
    assert int(mb.mask.sum()) == sum(s.completion_len for s in seqs) == mb.num_tokens
    assert torch.equal(mb.mask.reshape(-1)[mb.token_index], torch.ones(mb.num_tokens))
    for r, s in enumerate(seqs):
        t = s.completion_len
        assert torch.allclose(mb.old_logprobs[r, :t], torch.from_numpy(s.behaviour_logprobs))
        assert torch.all(mb.advantages[r, :t] == np.float32(s.advantage))


def test_bad_samples_are_refused_with_the_rollout_id():
    good = {"prompt_ids": [1, 2], "completion_ids": [3], "behaviour_logprobs": [-0.5], "token_versions": [0], "reward": 1.0}
    with pytest.raises(ValueError, match="r-empty.*empty prompt"):
        batching.to_sequence(RolloutSample.build(rollout_id="r-empty", **{**good, "prompt_ids": []}, advantage=1.0))
    with pytest.raises(ValueError, match="r-nan.*advantage"):
        batching.to_sequence(RolloutSample.build(rollout_id="r-nan", **good, advantage=float("nan")))
    with pytest.raises(ValueError, match="r-pos.*<= 0"):
        batching.to_sequence(
            RolloutSample.build(rollout_id="r-pos", **{**good, "behaviour_logprobs": [0.7]}, advantage=1.0)
        )


def test_split_stale_drops_only_samples_beyond_the_bound():
    fresh = random_samples(3, seed=1, version=5, prefix="fresh")
    old = random_samples(2, seed=2, version=1, prefix="old")
    _, dropped = batching.split_stale(fresh + old, current_version=6, max_off_policy_steps=4)
    assert {s.rollout_id for s in dropped} == {s.rollout_id for s in old}  # lag 5 > 4
    _, dropped = batching.split_stale(fresh + old, current_version=5, max_off_policy_steps=4)
    assert not dropped  # lag 4 is allowed


def _mini_batch_grads(tmp_path, agg_mode, budget, name):
    from trainer.engine import PolicyTrainer

    hparams = {} if agg_mode is None else {"loss_agg_mode": agg_mode}
    settings = tiny_settings(
        tmp_path,
        loss={"name": name, "hparams": hparams},
        batching={"micro_batch_tokens": budget},
    )
    trainer = PolicyTrainer(settings)
    seqs = [batching.to_sequence(s) for s in random_samples(12, seed=7)]
    micro = batching.pack(seqs, budget)
    trainer.accumulate_gradients(seqs)
    return len(micro), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batch_accumulation_equals_one_big_batch(tmp_path, agg_mode):
    n_big, big = _mini_batch_grads(tmp_path, agg_mode, budget=100_000, name="aspo")
    n_small, small = _mini_batch_grads(tmp_path, agg_mode, budget=24, name="aspo")
    assert n_big == 1 and n_small >= 4
    for k in big:
        assert torch.allclose(big[k], small[k], atol=1e-5, rtol=1e-4), k
    assert any(g.abs().sum() > 0 for g in big.values())


@pytest.mark.parametrize("loss", ["grpo", "dapo", "cispo", "gspo", "no_is"])
def test_accumulation_is_exact_for_every_loss_with_its_default_aggregation(tmp_path, loss):
    _, big = _mini_batch_grads(tmp_path, None, budget=100_000, name=loss)
    n_small, small = _mini_batch_grads(tmp_path, None, budget=24, name=loss)
    assert n_small >= 4
    for k in big:
        assert torch.allclose(big[k], small[k], atol=1e-5, rtol=1e-4), k
    assert any(g.abs().sum() > 0 for g in big.values())


def test_unsupported_aggregation_mode_is_refused_at_start(tmp_path):
    from trainer.engine import PolicyTrainer

    with pytest.raises(ValueError, match="loss_agg_mode 'seq-sum'"):
        PolicyTrainer(tiny_settings(tmp_path, loss={"name": "grpo", "hparams": {"loss_agg_mode": "seq-sum"}}))
