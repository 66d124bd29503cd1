"""Loss registry errors, metrics on a hand-made batch, the no-sync rule and the quantile helper."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import POLICY_LOSSES, LossInputs, compute_policy_loss, register_policy_loss
from trainer.losses.core import aggregate, row_nanquantile


def tiny_inputs(**overrides):
    lp = torch.zeros(2, 3, requires_grad=True)
    fields = {"logprobs": lp, "old_logprobs": torch.zeros(2, 3), "advantages": torch.tensor([1.0, -1.0]),
                  "mask": torch.ones(2, 3, dtype=torch.bool), "entropy": torch.rand(2, 3)}
    fields.update(overrides)
    return LossInputs(**fields)


def test_unknown_loss_lists_known_names():
    with pytest.raises(ValueError) as err:
        compute_policy_loss("ppo2", tiny_inputs())
    for name in ("aspo", "grpo", "dapo", "cispo", "gspo", "no_is"):
        assert name in str(err.value)


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("aspo", default_agg_mode="token-mean")(lambda x: None)
    assert POLICY_LOSSES["aspo"].body.__name__ == "aspo"


def test_unknown_hyperparameter_is_named_with_accepted_list():
    with pytest.raises(ValueError) as err:
        compute_policy_loss("grpo", tiny_inputs(), clip_ratio=0.2)
    msg = str(err.value)
    assert "clip_ratio" in msg and "eps_low" in msg and "kl_coef" in msg and "loss_agg_mode" in msg


@pytest.mark.parametrize(
    "name,hparams,inputs_kw,fragment",
    [
        ("aspo", {"eps": 1.5}, {}, "eps"),
        ("aspo", {"dual_clip_c": 0.5}, {}, "dual_clip_c"),
        ("aspo", {}, {"entropy": None}, "entropy"),
        ("grpo", {"loss_agg_mode": "seq-mean"}, {}, "seq-mean"),
        ("grpo", {"loss_agg_mode": "sum"}, {}, "loss_agg_mode"),
        ("dapo", {"kl_coef": 0.1}, {}, "ref_logprobs"),
        ("cispo", {"entropy_coef": 0.1}, {"entropy": None}, "entropy"),
        ("gspo", {}, {"token_weights": torch.ones(2, 3)}, "token_weights"),
    ],
)
def test_bad_settings_raise_clear_errors(name, hparams, inputs_kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        compute_policy_loss(name, tiny_inputs(**inputs_kw), **hparams)


def test_bad_input_shapes_name_the_field():
    with pytest.raises(ValueError, match="old_logprobs"):
        tiny_inputs(old_logprobs=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="advantages"):
        tiny_inputs(advantages=torch.zeros(3))
    with pytest.raises(ValueError, match="logprobs"):
        tiny_inputs(logprobs=torch.zeros(6))


def test_metrics_on_a_hand_made_batch():
    """Two responses, ratios chosen by hand; ASPO with a single eps = 0.2 and c = 3.

    Response 0 (A = +1): r = 1.5 (clipped upper), 0.25 (dual clip, < 1/3), 1.0, 0.8.
    Response 1 (A = -1): r = 0.5 (clipped lower), 4.0 (dual clip, > 3), 1.0, [masked].
    """
    ratios = torch.tensor([[1.5, 0.25, 1.0, 0.8], [0.5, 4.0, 1.0, 1.0]])
    lp = torch.full((2, 4), -1.0, requires_grad=True)
    old = lp.detach() - torch.log(ratios)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 9.0]])
    ref = lp.detach() + torch.log(torch.tensor(2.0))
    inputs = LossInputs(lp, old, torch.tensor([1.0, -1.0]), mask, entropy=entropy, ref_logprobs=ref)
    m = compute_policy_loss("aspo", inputs, entropy_quantile=None).metrics
    n = 7
    assert m["clipfrac_upper"] == pytest.approx(1 / n)
    assert m["clipfrac_lower"] == pytest.approx(1 / n)
    assert m["dualclip_frac_pos"] == pytest.approx(1 / n)
    assert m["dualclip_frac_neg"] == pytest.approx(1 / n)
    assert m["pos_token_frac"] == pytest.approx(4 / n) and m["neg_token_frac"] == pytest.approx(3 / n)
    assert m["is_ratio_pos_mean"] == pytest.approx((1.5 + 0.25 + 1.0 + 0.8) / 4, rel=1e-6)
    assert m["is_ratio_pos_min"] == pytest.approx(0.25) and m["is_ratio_pos_max"] == pytest.approx(1.5)
    assert m["is_ratio_neg_min"] == pytest.approx(0.5) and m["is_ratio_neg_max"] == pytest.approx(4.0)
    # w: A > 0 -> 0, c = 3, 1/1, 1/0.8; A < 0 -> 0, c = 3, 1.
    assert m["is_weight_pos_mean"] == pytest.approx((0 + 3 + 1 + 1.25) / 4, rel=1e-6)
    assert m["is_weight_neg_mean"] == pytest.approx((0 + 3 + 1) / 3, rel=1e-6)
    assert m["entropy_mean"] == pytest.approx((10 + 1.5) / n, rel=1e-6)
    k3 = lambda d: math.exp(d) - d - 1
    assert m["kl_behaviour"] == pytest.approx(sum(k3(-math.log(r)) for r in [1.5, 0.25, 1, 0.8, 0.5, 4, 1]) / n,
                                              rel=1e-5)
    assert m["kl_ref"] == pytest.approx(k3(math.log(2.0)), rel=1e-5)


def test_empty_advantage_subsets_give_zero_not_nan():
    inputs = tiny_inputs(advantages=torch.tensor([1.0, 0.0]))  # no negative-advantage token
    m = compute_policy_loss("grpo", inputs).metrics
    assert m["neg_token_frac"] == 0.0
    assert m["is_ratio_neg_mean"] == m["is_ratio_neg_min"] == m["is_ratio_neg_max"] == m["is_weight_neg_mean"] == 0.0
    assert m["is_ratio_pos_min"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_loss_computation_never_syncs(name, monkeypatch):
    """No .item()/.tolist()/bool() while the loss is built; metrics convert later, in one call."""

    def forbidden(*args, **kwargs):
        raise AssertionError("device sync inside the loss computation")

    inputs = tiny_inputs(ref_logprobs=torch.zeros(2, 3))
    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, method, forbidden)
        out = compute_policy_loss(name, inputs, kl_coef=0.01)
    assert all(isinstance(v, float) for v in out.metrics.values())
    assert all(t.dim() == 0 and not t.requires_grad for t in out.metric_tensors.values())


def test_row_nanquantile_matches_torch():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(50, 33, generator=g)
    values[torch.rand(50, 33, generator=g) < 0.4] = torch.nan
    values[0] = torch.nan
    values[1, 1:] = torch.nan  # a single valid value
    values[2] = 1.0  # ties
    for q in (0.0, 0.3, 0.8, 1.0):
        torch.testing.assert_close(row_nanquantile(values, q), torch.nanquantile(values, q, dim=-1, keepdim=True),
                                   equal_nan=True)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_zero_length_batch_is_finite(name):
    lp = torch.zeros(2, 0, requires_grad=True)
    out = compute_policy_loss(name, LossInputs(lp, torch.zeros(2, 0), torch.ones(2), torch.zeros(2, 0, dtype=torch.bool),
                                               entropy=torch.zeros(2, 0)))
    out.loss.backward()
    assert out.loss.item() == 0.0 and all(math.isfinite(v) for v in out.metrics.values())


def test_aggregation_ignores_empty_responses():
    values = torch.tensor([[1.0, 3.0, 100.0], [7.0, 7.0, 7.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(10 / 5)
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 2) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum").item() == pytest.approx((4 + 6) / 2)
    assert aggregate(torch.tensor([1.0, 5.0, 3.0]), mask, "seq-mean").item() == pytest.approx(2.0)
