"""Shared pieces of the policy losses: inputs/outputs, ratio, aggregation, KL, metrics.

Every loss in :mod:`trainer.losses.policy` is built from these helpers, so the
masking, aggregation and metric conventions are defined once. Nothing here
calls ``.item()``: metrics stay detached tensors until
:attr:`LossOutputs.metrics` converts them all with one ``tolist()`` (one
device sync per step, at the point the caller logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Ratio log-differences are clamped to this before ``exp`` (as verl/Archer2.0 do):
#: e^20 ~ 4.9e8 stays finite in fp32 and every clipping decision is unchanged.
LOG_RATIO_CLAMP = 20.0
#: verl's ``low_var_kl`` clamps the k3 estimate to [-10, 10]; k3 >= 0, so only the top binds.
K3_CLAMP = 10.0

TOKEN_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
#: ``seq-mean`` is for sequence-level losses (gspo): the mean of one term per response.
AGG_MODES = TOKEN_AGG_MODES + ("seq-mean",)


@dataclass(frozen=True)
class LossInputs:
    """One micro-batch of response tokens, all ``(B, T)`` aligned.

    ``mask`` marks valid response tokens (any dtype; non-zero = valid); values
    at masked positions are ignored (they may be padding garbage, even
    NaN/inf: they are replaced before any arithmetic, so no NaN reaches the
    loss or the gradients). ``advantages`` may also be ``(B,)`` (one value per
    response, broadcast). ``token_weights`` is an optional detached per-token
    multiplier applied to the policy term before aggregation (e.g. truncated
    IS min(pi_old / pi_behaviour, C) for engine/trainer mismatch).
    ``global_denominator`` makes micro-batch losses sum to the step loss: the
    number of valid tokens (``token-mean``) or valid responses (``seq-*``
    modes) of the whole optimizer step; see :func:`aggregation_count`.
    """

    logprobs: torch.Tensor  # (B, T) current policy, requires grad
    old_logprobs: torch.Tensor  # (B, T) behaviour / old policy
    advantages: torch.Tensor  # (B, T) or (B,)
    mask: torch.Tensor  # (B, T) valid response tokens
    entropy: torch.Tensor | None = None  # (B, T) current policy entropy
    ref_logprobs: torch.Tensor | None = None  # (B, T) reference policy, for the KL term
    token_weights: torch.Tensor | None = None  # (B, T) detached extra weight
    global_denominator: float | torch.Tensor | None = None

    def __post_init__(self) -> None:
        lp = self.logprobs
        if not isinstance(lp, torch.Tensor) or lp.dim() != 2 or not lp.is_floating_point():
            raise ValueError(f"logprobs must be a floating (B, T) tensor, got {_describe(lp)}")
        shape = tuple(lp.shape)
        for name in ("old_logprobs", "mask", "entropy", "ref_logprobs", "token_weights"):
            value = getattr(self, name)
            if value is None and name not in ("old_logprobs", "mask"):
                continue
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"{name} must be a {shape} tensor like logprobs, got {_describe(value)}")
        adv = self.advantages
        if not isinstance(adv, torch.Tensor) or tuple(adv.shape) not in (shape, shape[:1]):
            raise ValueError(f"advantages must be {shape} or {shape[:1]}, got {_describe(adv)}")
        for name in ("old_logprobs", "advantages", "mask", "entropy", "ref_logprobs", "token_weights"):
            value = getattr(self, name)
            if value is not None and value.device != lp.device:
                raise ValueError(f"{name} is on {value.device} but logprobs is on {lp.device}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


@dataclass
class LossOutputs:
    """The scalar loss and its diagnostics.

    ``metric_tensors`` are detached 0-d tensors (no device sync while the loss
    is built); :attr:`metrics` converts them all in one stacked ``tolist()``
    the first time it is read.
    """

    loss: torch.Tensor
    metric_tensors: dict[str, torch.Tensor]
    _floats: dict[str, float] | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        if self._floats is None:
            names = list(self.metric_tensors)
            if names:
                stacked = torch.stack([self.metric_tensors[k].detach().float().reshape(()) for k in names])
                self._floats = dict(zip(names, stacked.tolist()))
            else:
                self._floats = {}
        return dict(self._floats)


@dataclass(frozen=True)
class Prepared:
    """Sanitised fp32 view of :class:`LossInputs` that the loss bodies work on.

    Masked positions hold 0 (logprobs, old_logprobs -> ratio 1), so no branch
    of any loss produces inf/NaN there and the gradient at masked positions is
    exactly 0.
    """

    logprobs: torch.Tensor  # (B, T) fp32, differentiable
    old_logprobs: torch.Tensor  # (B, T) fp32, detached
    advantages: torch.Tensor  # (B, T) fp32, detached
    mask: torch.Tensor  # (B, T) bool
    entropy: torch.Tensor | None  # (B, T) fp32, differentiable
    ref_logprobs: torch.Tensor | None
    token_weights: torch.Tensor | None

    @property
    def log_ratio(self) -> torch.Tensor:
        """log(pi_theta / pi_old), clamped to +-20 (verl/Archer2.0 convention)."""
        return torch.clamp(self.logprobs - self.old_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)

    @property
    def ratio(self) -> torch.Tensor:
        """r = exp(clamp(log pi_theta - log pi_old, -20, 20)), differentiable."""
        return torch.exp(self.log_ratio)


def prepare(inputs: LossInputs) -> Prepared:
    """Cast to fp32, detach the non-policy inputs and zero masked positions."""
    mask = inputs.mask if inputs.mask.dtype == torch.bool else inputs.mask != 0
    adv = inputs.advantages
    if adv.dim() == 1:
        adv = adv.unsqueeze(1).expand_as(mask)

    def clean(t: torch.Tensor | None, detach: bool) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.detach() if detach else t
        return torch.where(mask, t.float(), 0.0)

    return Prepared(
        logprobs=clean(inputs.logprobs, False),
        old_logprobs=clean(inputs.old_logprobs, True),
        advantages=clean(adv, True),
        mask=mask,
        entropy=clean(inputs.entropy, False),
        ref_logprobs=clean(inputs.ref_logprobs, True),
        token_weights=clean(inputs.token_weights, True),
    )


# ------------------------------------------------------------------ aggregation
def aggregation_count(mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """What a mode divides by: valid tokens (``token-mean``) or responses with >= 1 valid token.

    Sum this over the micro-batches of an optimizer step and pass it as
    ``LossInputs.global_denominator`` to make micro-batch losses add up to
    the loss of the whole step (otherwise each micro-batch is averaged on its
    own, which weights short micro-batches up).
    """
    _check_mode(loss_agg_mode)
    mask = mask if mask.dtype == torch.bool else mask != 0
    if loss_agg_mode == "token-mean":
        return mask.sum().float()
    return (mask.sum(-1) > 0).sum().float()


def aggregate(
    values: torch.Tensor,  # (B, T) per token, or (B,) per response
    mask: torch.Tensor,  # (B, T) bool
    loss_agg_mode: str,
    global_denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce per-token or per-response loss terms to a scalar.

    ``token-mean``: sum over valid tokens / number of valid tokens (DAPO).
    ``seq-mean-token-mean``: mean over responses of each response's token
    mean (GRPO/ASPO, paper Eq. 1: 1/G sum_i 1/|o_i| sum_t).
    ``seq-mean-token-sum``: mean over responses of each response's token sum.
    ``seq-mean``: mean of one value per response (GSPO); a ``(B,)`` input
    under a token mode is broadcast to its valid tokens first (so
    ``seq-mean-token-mean`` equals ``seq-mean``). Responses without a valid
    token are ignored; an empty batch gives 0 (not NaN) and zero gradients.
    """
    _check_mode(loss_agg_mode)
    if values.dim() == 1:
        if loss_agg_mode == "seq-mean":
            seq_valid = mask.sum(-1) > 0
            total = torch.where(seq_valid, values, 0.0).sum()
            return total / _denominator(seq_valid.sum(), global_denominator)
        values = values.unsqueeze(1).expand_as(mask)
    elif loss_agg_mode == "seq-mean":
        raise ValueError(
            "loss_agg_mode 'seq-mean' applies to sequence-level losses (gspo) only; "
            f"for token-level losses use one of {TOKEN_AGG_MODES}"
        )
    masked = torch.where(mask, values, 0.0)
    if loss_agg_mode == "token-mean":
        return masked.sum() / _denominator(mask.sum(), global_denominator)
    n_tokens = mask.sum(-1)
    per_seq = masked.sum(-1)
    if loss_agg_mode == "seq-mean-token-mean":
        per_seq = per_seq / n_tokens.clamp_min(1)
    return per_seq.sum() / _denominator((n_tokens > 0).sum(), global_denominator)


def _denominator(count: torch.Tensor, global_denominator: float | torch.Tensor | None) -> torch.Tensor:
    if global_denominator is None:
        return count.clamp_min(1).float()
    if isinstance(global_denominator, torch.Tensor):
        return global_denominator.to(count.device).float().clamp_min(1)
    if not global_denominator >= 0:
        raise ValueError(f"global_denominator must be >= 0, got {global_denominator}")
    return torch.tensor(max(float(global_denominator), 1.0), device=count.device)


def _check_mode(loss_agg_mode: str) -> None:
    if loss_agg_mode not in AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; known: {list(AGG_MODES)}")


# --------------------------------------------------------------------- KL, masks
def k3_kl(logprobs: torch.Tensor, other_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_other): e^d - d - 1 with d = log pi_other - log pi_theta.

    Schulman's low-variance unbiased estimator (verl ``low_var_kl``, the ASPO
    recipe's KL with coefficient 0.001); d clamped to +-20, result to <= 10 as verl does.
    """
    d = torch.clamp(other_logprobs - logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(d) - d - 1.0, max=K3_CLAMP)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``mask``; 0 for an empty mask (NaN-free)."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def row_nanquantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``q`` quantile ignoring NaN, linear interpolation: ``(B, T) -> (B, 1)``.

    Same result as ``torch.nanquantile(values, q, dim=-1, keepdim=True)``
    (which Archer2.0 uses) but without torch.quantile's 16M-element input limit
    (1024 responses x 32k tokens exceed it). All-NaN rows give NaN.
    """
    if values.shape[-1] == 0:
        return values.new_full((*values.shape[:-1], 1), torch.nan)
    sorted_vals, _ = torch.sort(values, dim=-1)  # NaN sort last
    n_valid = (~torch.isnan(values)).sum(-1, keepdim=True)
    pos = (q * (n_valid - 1).clamp_min(0)).to(values.dtype)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    v_lo = sorted_vals.gather(-1, lo)
    v_hi = sorted_vals.gather(-1, hi)
    out = torch.lerp(v_lo, v_hi, pos - lo.to(values.dtype))
    return torch.where(n_valid > 0, out, torch.nan)
