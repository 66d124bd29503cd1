"""Policy losses: autograd gradients equal -A * w * (aggregation weight) from the tables.

The expected weights are re-derived here from docs/algorithms.md, independently
of trainer.losses, and compared with autograd for every loss and every
aggregation mode, on random inputs that cover every branch (including
|log-ratio| > 20, zero advantages and responses without valid tokens).
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    POLICY_LOSSES,
    LossInputs,
    aggregation_count,
    compute_policy_loss,
    policy_loss_hparams,
)

TOKEN_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
CASES = [(name, mode) for name in ("aspo", "grpo", "dapo", "cispo", "no_is") for mode in TOKEN_MODES] + [
    ("gspo", mode) for mode in TOKEN_MODES + ("seq-mean",)
]


def make_batch(seed: int, b: int = 6, t: int = 40, spread: float = 1.5):
    """Random batch with ratios on both sides of every clip bound, extremes, A = 0 and an empty row."""
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(b, t, generator=g, dtype=torch.float64) * 4
    log_ratio = torch.randn(b, t, generator=g, dtype=torch.float64) * spread
    log_ratio[0, :4] = torch.tensor([25.0, -25.0, 21.0, -30.0], dtype=torch.float64)  # beyond the +-20 clamp
    old = logprobs - log_ratio
    adv_seq = torch.randn(b, generator=g, dtype=torch.float64)
    adv_seq[1] = 0.0
    adv_seq[0] = -adv_seq[0].abs()  # row 0's extremes with A < 0
    adv_seq[3] = adv_seq[3].abs()  # ... and row 3 with A > 0
    old[3, :2] = logprobs[3, :2] - torch.tensor([25.0, -25.0], dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.8
    mask[2] = False  # a response without valid tokens
    entropy = torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    return logprobs, old, adv_seq, mask, entropy


def expected_token_weight(name: str, r, adv, eps_t, hp) -> torch.Tensor:
    """w from the tables in docs/algorithms.md (A >= 0 / A < 0 rows)."""
    if name == "aspo":
        c = hp["dual_clip_c"]
        w_pos = torch.where(r > 1 + eps_t, 0.0, torch.where(r < 1 / c, c, 1 / r))
        w_neg = torch.where(r < 1 - eps_t, 0.0, torch.where(r > c, c, r))
    elif name in ("grpo", "dapo"):
        c = hp["dual_clip_c"]
        w_pos = torch.where(r > 1 + hp["eps_high"], 0.0, r)
        w_neg = torch.where((r < 1 - hp["eps_low"]) | (r > c), 0.0, r)
    elif name == "cispo":
        w = torch.clamp(r, 1 - hp["eps_low"], 1 + hp["eps_high"])
        return w
    elif name == "no_is":
        return torch.ones_like(r)
    return torch.where(adv >= 0, w_pos, w_neg)


def aspo_eps(entropy, mask, hp):
    masked = torch.where(mask, entropy, torch.nan)
    q = torch.nanquantile(masked, hp["entropy_quantile"], dim=-1, keepdim=True)
    return torch.where(masked <= q, hp["eps"], hp["eps_high_entropy"]).to(entropy.dtype)


def expected_grad(name, mode, logprobs, old, adv_seq, mask, entropy, hp):
    adv = adv_seq[:, None].expand_as(logprobs)
    n_i = mask.sum(-1).to(logprobs.dtype)
    g_count = (n_i > 0).sum()
    n_total = mask.sum()
    if name == "gspo":
        s = torch.exp(torch.clamp(((logprobs - old) * mask).sum(-1) / n_i.clamp_min(1), -20, 20))
        w_seq = torch.where(
            adv_seq >= 0,
            torch.where(s > 1 + hp["eps_high"], 0.0, s),
            torch.where(s < 1 - hp["eps_low"], 0.0, s),
        )
        # d L_i / d logp_t = -A_i w_i / n_i; the mode weights L_i by 1/G, n_i/N or n_i/G.
        seq_weight = {"seq-mean": 1 / g_count, "seq-mean-token-mean": 1 / g_count,
                      "token-mean": n_i / n_total, "seq-mean-token-sum": n_i / g_count}[mode]
        per_seq = -adv_seq * w_seq / n_i.clamp_min(1) * seq_weight
        return torch.where(mask, per_seq[:, None].expand_as(logprobs), 0.0)
    r = torch.exp(torch.clamp(logprobs - old, -20, 20))
    eps_t = aspo_eps(entropy, mask, hp) if name == "aspo" else None
    w = expected_token_weight(name, r, adv, eps_t, hp)
    agg = {"token-mean": torch.full_like(r, 1 / n_total),
           "seq-mean-token-mean": (1 / (g_count * n_i.clamp_min(1)))[:, None].expand_as(r),
           "seq-mean-token-sum": torch.full_like(r, 1 / g_count)}[mode]
    return torch.where(mask, -adv * w * agg, 0.0)


@pytest.mark.parametrize("name,mode", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_weight_table(name, mode, seed):
    spread = 2e-3 if name == "gspo" else 1.5  # GSPO's eps is 3e-4: keep s_i around its clip range
    logprobs, old, adv_seq, mask, entropy = make_batch(seed, spread=spread)
    lp = logprobs.clone().float().requires_grad_()
    inputs = LossInputs(lp, old.float(), adv_seq.float(), mask, entropy=entropy.float())
    out = compute_policy_loss(name, inputs, loss_agg_mode=mode)
    out.loss.backward()
    hp = policy_loss_hparams(name)
    want = expected_grad(name, mode, lp.detach().double(), old.float().double(), adv_seq.float().double(),
                         mask, entropy.float().double(), hp)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(lp.grad.double(), want, atol=2e-6, rtol=1e-4)
    assert (lp.grad[~mask] == 0).all()


def test_weight_table_branches_are_all_exercised():
    """Guard for the test above: the random batch must hit every row of the ASPO table."""
    logprobs, old, adv_seq, mask, entropy = make_batch(0)
    r = torch.exp(torch.clamp(logprobs - old, -20, 20))
    adv = adv_seq[:, None].expand_as(r)
    eps_t = aspo_eps(entropy, mask, policy_loss_hparams("aspo"))
    pos, neg = mask & (adv > 0), mask & (adv < 0)
    branches = [pos & (r > 1 + eps_t), pos & (r < 1 / 3), pos & (r >= 1 / 3) & (r <= 1 + eps_t),
                neg & (r < 1 - eps_t), neg & (r > 3), neg & (r >= 1 - eps_t) & (r <= 3)]
    assert all(b.any() for b in branches)
    assert ((eps_t[mask] - 0.4).abs() < 1e-6).any() and ((eps_t[mask] - 0.2).abs() < 1e-6).any()


def test_aspo_paper_mode_uses_single_eps_and_needs_no_entropy():
    logprobs, old, adv_seq, mask, _ = make_batch(3)
    lp = logprobs.float().requires_grad_()
    out = compute_policy_loss("aspo", LossInputs(lp, old.float(), adv_seq.float(), mask), entropy_quantile=None)
    out.loss.backward()
    hp = {**policy_loss_hparams("aspo")}
    r = torch.exp(torch.clamp(lp.detach() - old.float(), -20, 20)).double()
    adv = adv_seq.float().double()[:, None].expand_as(r)
    w = expected_token_weight("aspo", r, adv, torch.full_like(r, hp["eps"]), hp)
    n_i = mask.sum(-1).double()
    agg = (1 / ((n_i > 0).sum() * n_i.clamp_min(1)))[:, None]
    torch.testing.assert_close(lp.grad.double(), torch.where(mask, -adv * w * agg, 0.0), atol=2e-6, rtol=1e-4)


def test_aspo_value_uses_flipped_ratio():
    """A > 0 unclipped: value -A / r (flipped ratio); A < 0 unclipped: -A * r (paper / released code)."""
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    old = lp - torch.log(torch.tensor([[1.1, 1.1]]))  # r = 1.1 on both tokens
    mask = torch.ones(1, 2, dtype=torch.bool)
    pos = compute_policy_loss("aspo", LossInputs(lp, old, torch.tensor([2.0]), mask), entropy_quantile=None)
    neg = compute_policy_loss("aspo", LossInputs(lp, old, torch.tensor([-2.0]), mask), entropy_quantile=None)
    assert pos.loss.item() == pytest.approx(-2.0 / 1.1, rel=1e-6)
    assert neg.loss.item() == pytest.approx(2.0 * 1.1, rel=1e-6)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_all_masked_batch_gives_zero_loss_and_zero_grads(name):
    lp = torch.full((3, 5), float("nan")).requires_grad_()  # masked garbage must not leak
    old = torch.full((3, 5), float("-inf"))
    ent = torch.full((3, 5), float("inf")).requires_grad_()
    mask = torch.zeros(3, 5, dtype=torch.bool)
    out = compute_policy_loss(name, LossInputs(lp, old, torch.ones(3), mask, entropy=ent, ref_logprobs=old),
                              kl_coef=0.1, entropy_coef=0.01)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.equal(lp.grad, torch.zeros_like(lp)) and torch.equal(ent.grad, torch.zeros_like(ent))
    assert all(math.isfinite(v) for v in out.metrics.values())


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_garbage_at_masked_positions_and_extreme_ratios_stay_finite(name):
    logprobs, old, adv_seq, mask, entropy = make_batch(5)
    lp = logprobs.float().masked_fill(~mask, float("nan")).requires_grad_()
    old = old.float().masked_fill(~mask, float("inf"))
    clean = LossInputs(logprobs.float(), old.masked_fill(~mask, 0.0), adv_seq.float(), mask, entropy=entropy.float())
    out = compute_policy_loss(name, LossInputs(lp, old, adv_seq.float(), mask, entropy=entropy.float()))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(lp.grad).all()
    assert out.loss.item() == pytest.approx(compute_policy_loss(name, clean).loss.item(), rel=1e-6)
    assert all(math.isfinite(v) for v in out.metrics.values())


def test_kl_and_entropy_terms_gradients():
    logprobs, old, adv_seq, mask, entropy = make_batch(7)
    lp = logprobs.float().requires_grad_()
    ent = entropy.float().requires_grad_()
    ref = (logprobs + 0.3 * torch.randn_like(logprobs)).float()
    kw = {"loss_agg_mode": "token-mean", "kl_coef": 0.05, "entropy_coef": 0.01}
    with_terms = compute_policy_loss("no_is", LossInputs(lp, old.float(), adv_seq.float(), mask, entropy=ent,
                                                         ref_logprobs=ref), **kw)
    with_terms.loss.backward()
    n = mask.sum()
    adv = adv_seq.float()[:, None].expand_as(lp)
    d = torch.clamp(ref - lp.detach(), -20, 20)
    k3 = torch.exp(d) - d - 1
    kl_grad = torch.where(k3 < 10, 1 - torch.exp(d), 0.0)  # d k3 / d logp, clamped at 10 like verl
    want = torch.where(mask, (-adv + 0.05 * kl_grad) / n, 0.0)
    torch.testing.assert_close(lp.grad, want, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(ent.grad, torch.where(mask, -0.01 / n, 0.0).expand_as(ent), atol=1e-8, rtol=1e-5)
    assert with_terms.metrics["kl_ref"] == pytest.approx(k3[mask].mean().item(), rel=1e-5)


def test_token_weights_scale_the_policy_gradient():
    logprobs, old, adv_seq, mask, entropy = make_batch(8)
    tw = torch.rand_like(logprobs).float() * 2
    grads = []
    for weights in (None, tw):
        lp = logprobs.float().requires_grad_()
        inputs = LossInputs(lp, old.float(), adv_seq.float(), mask, entropy=entropy.float(), token_weights=weights)
        compute_policy_loss("aspo", inputs).loss.backward()
        grads.append(lp.grad)
    torch.testing.assert_close(grads[1], grads[0] * tw, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name,mode", [("dapo", "token-mean"), ("aspo", "seq-mean-token-mean"),
                                       ("grpo", "seq-mean-token-sum"), ("gspo", "seq-mean")])
def test_global_denominator_makes_micro_batches_sum_to_the_full_batch(name, mode):
    logprobs, old, adv_seq, mask, entropy = make_batch(9, b=8)
    full_lp = logprobs.float().requires_grad_()
    full = compute_policy_loss(name, LossInputs(full_lp, old.float(), adv_seq.float(), mask,
                                                entropy=entropy.float()), loss_agg_mode=mode)
    full.loss.backward()
    denominator = aggregation_count(mask, mode)
    lp = logprobs.float().requires_grad_()
    total = 0.0
    for rows in (slice(0, 3), slice(3, 8)):
        part = LossInputs(lp[rows], old[rows].float(), adv_seq[rows].float(), mask[rows],
                          entropy=entropy[rows].float(), global_denominator=denominator)
        total = total + compute_policy_loss(name, part, loss_agg_mode=mode).loss
    total.backward()
    assert total.item() == pytest.approx(full.loss.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(lp.grad, full_lp.grad, atol=1e-7, rtol=1e-5)
