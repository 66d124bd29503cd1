"""The registered policy losses: ASPO and its baselines (GRPO, DAPO, CISPO, GSPO, no-IS).

Each loss is defined by its gradient weight w: d loss_t / d log pi_theta(o_t)
= -A_t * w_t before aggregation (docs/algorithms.md). The bodies below are
pure functions of the sanitised inputs (:class:`~trainer.losses.core.Prepared`);
the registry adds aggregation, KL / entropy terms and metrics identically for
all of them. ``r = exp(clamp(log pi_theta - log pi_old, -20, 20))``.
"""

from __future__ import annotations

import torch

from trainer.losses.core import LOG_RATIO_CLAMP, Prepared, row_nanquantile
from trainer.losses.registry import PolicyTerms, register_policy_loss


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _token_eps(x: Prepared, eps: float, eps_high_entropy: float, entropy_quantile: float | None) -> torch.Tensor:
    """Per-token clip epsilon of Archer2.0 (``use_dynamic_clip``): (B, T), detached.

    Within each response, q = the ``entropy_quantile`` quantile of the valid
    tokens' entropies (torch.nanquantile semantics, linear interpolation);
    tokens with entropy <= q get ``eps``, the others ``eps_high_entropy``.
    """
    if entropy_quantile is None:
        return torch.full_like(x.logprobs, eps, requires_grad=False)
    if x.entropy is None:
        raise ValueError(
            f"aspo with entropy_quantile={entropy_quantile} needs LossInputs.entropy to choose each token's eps; "
            "pass the per-token entropies or set entropy_quantile=None (the paper's single eps)"
        )
    ent = torch.where(x.mask, x.entropy.detach(), torch.nan)
    threshold = row_nanquantile(ent, entropy_quantile)  # (B, 1)
    return torch.where(ent <= threshold, eps, eps_high_entropy).to(x.logprobs.dtype)


@register_policy_loss("aspo", default_agg_mode="seq-mean-token-mean")
def aspo(
    x: Prepared,
    *,
    eps: float = 0.2,
    eps_high_entropy: float = 0.4,
    entropy_quantile: float | None = 0.8,
    dual_clip_c: float = 3.0,
) -> PolicyTerms:
    """ASPO, Asymmetric Importance Sampling Policy Optimization (arXiv 2510.06062, method: AIS).

    A >= 0 tokens use the flipped ratio pi_old * pi_theta / sg(pi_theta^2)
    (the paper's asymmetric IS, "AIS"), implemented as in the released ``compute_policy_loss_archer``:
    r_bar = min(r, 1 + eps), term -A * r_bar / sg(r_bar)^2 (value -A / r_bar,
    w = 1/r), soft dual clip -A * sg(c) * log pi_theta when 1/r_bar > c (w = c).
    A < 0 tokens keep the PPO ratio with the lower clip, r_low = max(r, 1 - eps),
    term -A * r_low (w = r), and a soft dual clip -A * sg(c) * log pi_theta when
    r_low > c (w = c; verl's usual hard dual clip would give 0).

    | A >= 0: w = 0 if r > 1+eps; 1/r if 1/c <= r <= 1+eps; c if r < 1/c
    | A < 0:  w = 0 if r < 1-eps; r if 1-eps <= r <= c;   c if r > c

    Departure of the released code from the paper text, followed here:
    eps is per token (``eps_high_entropy`` above the per-response
    ``entropy_quantile`` quantile of entropy; the paper says eps = 0.2 for all
    tokens: pass ``entropy_quantile=None`` for that). Aggregation: paper Eq. 1
    (seq-mean-token-mean). The soft dual-clip branch's value is
    -A * c * log pi_theta (released form), so the loss value jumps there; only
    its gradient is meaningful.
    """
    _require(0 < eps < 1, f"aspo: eps must be in (0, 1), got {eps}")
    _require(0 < eps_high_entropy < 1, f"aspo: eps_high_entropy must be in (0, 1), got {eps_high_entropy}")
    _require(
        entropy_quantile is None or 0.0 <= entropy_quantile <= 1.0,
        f"aspo: entropy_quantile must be in [0, 1] or None, got {entropy_quantile}",
    )
    _require(dual_clip_c > 1, f"aspo: dual_clip_c must be > 1, got {dual_clip_c}")
    eps_t = _token_eps(x, eps, eps_high_entropy, entropy_quantile)
    adv, r, c = x.advantages, x.ratio, float(dual_clip_c)
    positive = adv >= 0
    r_bar = torch.clamp(r, max=1 + eps_t)
    flipped = -adv * r_bar / r_bar.detach().square()
    r_low = torch.clamp(r, min=1 - eps_t)
    negative_term = -adv * r_low
    rd = r.detach()
    dual_pos_all = positive & (rd < 1 / c)  # 1 / r_bar > c  <=>  r < 1/c (as 1/c < 1 <= 1 + eps)
    dual_neg_all = ~positive & (r_low.detach() > c)
    soft_dual = -adv * c * x.logprobs
    token_loss = torch.where(
        dual_pos_all | dual_neg_all, soft_dual, torch.where(positive, flipped, negative_term)
    )
    w_pos = torch.where(rd > 1 + eps_t, 0.0, torch.where(rd < 1 / c, c, 1 / rd))
    w_neg = torch.where(rd < 1 - eps_t, 0.0, torch.where(rd > c, c, rd))
    return PolicyTerms(
        ratio=rd,
        weight=torch.where(positive, w_pos, w_neg),
        clip_upper=(adv > 0) & (rd > 1 + eps_t),
        clip_lower=(adv < 0) & (rd < 1 - eps_t),
        dual_pos=(adv > 0) & dual_pos_all,
        dual_neg=(adv < 0) & dual_neg_all,
        token_loss=token_loss,
    )


def _dual_clip_ppo(x: Prepared, name: str, eps_low: float, eps_high: float, dual_clip_c: float) -> PolicyTerms:
    """PPO clipped surrogate with verl's hard dual clip for A < 0 (Ye et al. 2020, "dual-clip PPO").

    loss = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), and for A < 0
    min(that, -A c): A >= 0: w = r if r <= 1 + eps_high else 0;
    A < 0: w = r if 1 - eps_low <= r <= c else 0.
    """
    _require(0 <= eps_low < 1, f"{name}: eps_low must be in [0, 1), got {eps_low}")
    _require(eps_high >= 0, f"{name}: eps_high must be >= 0, got {eps_high}")
    _require(dual_clip_c > 1, f"{name}: dual_clip_c must be > 1, got {dual_clip_c}")
    adv, r, c = x.advantages, x.ratio, float(dual_clip_c)
    positive = adv >= 0
    positive_term = -adv * torch.clamp(r, max=1 + eps_high)
    r_low = torch.clamp(r, min=1 - eps_low)
    rd = r.detach()
    dual = ~positive & (rd > c)
    negative_term = torch.where(dual, -adv * c, -adv * r_low)  # -A c is constant: no gradient
    w_pos = torch.where(rd > 1 + eps_high, 0.0, rd)
    w_neg = torch.where((rd < 1 - eps_low) | (rd > c), 0.0, rd)
    return PolicyTerms(
        ratio=rd,
        weight=torch.where(positive, w_pos, w_neg),
        clip_upper=(adv > 0) & (rd > 1 + eps_high),
        clip_lower=(adv < 0) & (rd < 1 - eps_low),
        dual_pos=torch.zeros_like(positive),
        dual_neg=(adv < 0) & dual,
        token_loss=torch.where(positive, positive_term, negative_term),
    )


@register_policy_loss("grpo", default_agg_mode="seq-mean-token-mean")
def grpo(x: Prepared, *, eps_low: float = 0.2, eps_high: float = 0.2, dual_clip_c: float = 3.0) -> PolicyTerms:
    """GRPO as run as the ASPO paper's baseline (arXiv 2510.06062 experiments; GRPO: arXiv 2402.03300).

    PPO clip eps = 0.2 on both sides plus verl's hard dual clip c = 3 for
    A < 0, per-response token mean then mean over responses (the paper's
    Eq. 1). The KL term (k3, 0.001 in the recipe) is the shared ``kl_coef``.
    """
    return _dual_clip_ppo(x, "grpo", eps_low, eps_high, dual_clip_c)


@register_policy_loss("dapo", default_agg_mode="token-mean")
def dapo(x: Prepared, *, eps_low: float = 0.2, eps_high: float = 0.28, dual_clip_c: float = 10.0) -> PolicyTerms:
    """DAPO's policy loss (arXiv 2503.14476): clip-higher (0.2 / 0.28), token-level policy-gradient loss.

    The recipe's dual clip c = 10 (verl DAPO recipe) is kept; DAPO's dynamic
    sampling and overlong penalty live on the orchestrator side.
    """
    return _dual_clip_ppo(x, "dapo", eps_low, eps_high, dual_clip_c)


@register_policy_loss("cispo", default_agg_mode="token-mean")
def cispo(x: Prepared, *, eps_low: float = 1.0, eps_high: float = 0.28) -> PolicyTerms:
    """CISPO (MiniMax-M1, arXiv 2506.13585, Eq. 4): J = sum_t sg(clip(r, 1-eps_low, 1+eps_high)) A log pi.

    The clipped IS weight is a stop-gradient coefficient, so no token's
    gradient is ever dropped: w = clip(r, 1 - eps_low, 1 + eps_high) > 0.
    Defaults: ``eps_low = 1.0`` (lower bound 0, i.e. none: the paper "did not
    impose a lower bound ... by setting eps_low to a large value") and
    ``eps_high = 0.28``; the paper tunes eps_high without publishing it, and
    public values range from 0.28 (Trinity-RFT's default, DAPO's clip-higher)
    to 4.0 and above (ScaleRL): choose it explicitly for real runs.
    Token-level normalisation as in the paper.
    """
    _require(eps_low >= 0, f"cispo: eps_low must be >= 0, got {eps_low}")
    _require(eps_high >= 0, f"cispo: eps_high must be >= 0, got {eps_high}")
    adv = x.advantages
    rd = x.ratio.detach()
    weight = torch.clamp(rd, min=1 - eps_low, max=1 + eps_high)
    active = adv != 0
    return PolicyTerms(
        ratio=rd,
        weight=weight,
        clip_upper=active & (rd > 1 + eps_high),
        clip_lower=active & (rd < 1 - eps_low),
        dual_pos=torch.zeros_like(active),
        dual_neg=torch.zeros_like(active),
        token_loss=-adv * weight * x.logprobs,
    )


@register_policy_loss("gspo", default_agg_mode="seq-mean", sequence_level=True)
def gspo(x: Prepared, *, eps_low: float = 3e-4, eps_high: float = 4e-4) -> PolicyTerms:
    """GSPO (Qwen, arXiv 2507.18071, the GSPO objective): clipped surrogate on the sequence ratio.

    s_i = exp(mean_t (log pi_theta - log pi_old)) over response i's n_i valid
    tokens; L_i = max(-A_i s_i, -A_i clip(s_i, 1 - eps_low, 1 + eps_high))
    with A_i the response's advantage (token advantages are averaged over its
    valid tokens). Gradient: d L_i / d log pi_theta(o_{i,t}) = -A_i s_i / n_i
    when unclipped (d s_i / d log pi_t = s_i / n_i), 0 when clipped; the
    default ``seq-mean`` then divides by G responses, so each token receives
    -A_i s_i / (n_i G). Under a token mode L_i is broadcast to its tokens
    (``token-mean`` weights response i by n_i / N instead of 1 / G). The
    ``weight`` metric reports s_i (not s_i / n_i) to be comparable with the
    token-level losses. The paper's eps = 3e-4 / 4e-4.
    """
    _require(0 <= eps_low < 1, f"gspo: eps_low must be in [0, 1), got {eps_low}")
    _require(eps_high >= 0, f"gspo: eps_high must be >= 0, got {eps_high}")
    n_tokens = x.mask.sum(-1).clamp_min(1)  # (B,)
    seq_log_ratio = (x.logprobs - x.old_logprobs).sum(-1) / n_tokens  # masked positions are 0
    s = torch.exp(torch.clamp(seq_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    adv = x.advantages.sum(-1) / n_tokens
    positive = adv >= 0
    seq_loss = torch.where(
        positive, -adv * torch.clamp(s, max=1 + eps_high), -adv * torch.clamp(s, min=1 - eps_low)
    )
    sd = s.detach()
    weight = torch.where(positive, torch.where(sd > 1 + eps_high, 0.0, sd), torch.where(sd < 1 - eps_low, 0.0, sd))

    def per_token(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(1).expand_as(x.mask)

    return PolicyTerms(
        ratio=per_token(sd),
        weight=per_token(weight),
        clip_upper=per_token((adv > 0) & (sd > 1 + eps_high)),
        clip_lower=per_token((adv < 0) & (sd < 1 - eps_low)),
        dual_pos=torch.zeros_like(x.mask),
        dual_neg=torch.zeros_like(x.mask),
        seq_loss=seq_loss,
    )


@register_policy_loss("no_is", default_agg_mode="seq-mean-token-mean")
def no_is(x: Prepared) -> PolicyTerms:
    """The ASPO paper's no-IS ablation (arXiv 2510.06062, "DAPO w/o IS"): every IS weight fixed to 1.

    loss_t = -A * log pi_theta (plain REINFORCE with group advantages), w = 1;
    no clipping, so the clip metrics are 0 and ``is_ratio_*`` still report the
    actual (unused) ratios.
    """
    none = torch.zeros_like(x.mask)
    return PolicyTerms(
        ratio=x.ratio.detach(),
        weight=torch.ones_like(x.logprobs).detach(),
        clip_upper=none,
        clip_lower=none,
        dual_pos=none,
        dual_neg=none,
        token_loss=-x.advantages * x.logprobs,
    )
