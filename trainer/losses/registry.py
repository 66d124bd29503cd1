"""The policy-loss registry: names -> pure loss functions, plus the shared assembly.

A registered loss body returns :class:`PolicyTerms` (per-token or
per-response loss terms and the masks/weights that explain them);
:class:`PolicyLoss` validates hyperparameters, adds the KL and entropy terms,
aggregates and computes the metrics the same way for every loss (prime-rl
``loss.py`` / verl ``POLICY_LOSS_REGISTRY`` style, without string dispatch).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainer.losses.core import (
    AGG_MODES,
    LossInputs,
    LossOutputs,
    Prepared,
    aggregate,
    k3_kl,
    masked_mean,
    prepare,
)

#: Hyperparameters every loss accepts, with their (only) defaults.
#: ``loss_agg_mode``'s default is per loss (see ``register_policy_loss``).
COMMON_HPARAMS: dict[str, Any] = {"kl_coef": 0.0, "entropy_coef": 0.0}


@dataclass(frozen=True)
class PolicyTerms:
    """What a loss body computes; all tensors ``(B, T)`` unless noted.

    Exactly one of ``token_loss`` (gradient w.r.t. logprobs is -A * w per
    token) or ``seq_loss`` ``(B,)`` (sequence-level losses) is set. ``ratio``
    and ``weight`` (the analytic gradient weight w) are detached and only feed
    the metrics; the boolean masks say which tokens hit each clip.
    """

    ratio: torch.Tensor
    weight: torch.Tensor
    clip_upper: torch.Tensor
    clip_lower: torch.Tensor
    dual_pos: torch.Tensor
    dual_neg: torch.Tensor
    token_loss: torch.Tensor | None = None
    seq_loss: torch.Tensor | None = None  # (B,)


LossBody = Callable[..., PolicyTerms]


@dataclass(frozen=True)
class PolicyLoss:
    """A registered loss: ``loss(inputs, **hparams) -> LossOutputs``."""

    name: str
    body: LossBody
    default_agg_mode: str
    sequence_level: bool

    @property
    def hparam_defaults(self) -> dict[str, Any]:
        """Every accepted hyperparameter with its default."""
        own = {
            p.name: p.default
            for p in inspect.signature(self.body).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        return {**own, "loss_agg_mode": self.default_agg_mode, **COMMON_HPARAMS}

    def __call__(self, inputs: LossInputs, **hparams: Any) -> LossOutputs:
        if not isinstance(inputs, LossInputs):
            raise TypeError(f"loss {self.name!r} takes LossInputs, got {type(inputs).__name__}")
        defaults = self.hparam_defaults
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for loss {self.name!r}; accepted: {sorted(defaults)}"
            )
        params = {**defaults, **hparams}
        agg_mode = params.pop("loss_agg_mode")
        kl_coef, entropy_coef = float(params.pop("kl_coef")), float(params.pop("entropy_coef"))
        self._check_common(inputs, agg_mode, kl_coef, entropy_coef)
        x = prepare(inputs)
        terms = self.body(x, **params)
        return _assemble(x, terms, agg_mode, kl_coef, entropy_coef, inputs.global_denominator)

    def _check_common(self, inputs: LossInputs, agg_mode: str, kl_coef: float, entropy_coef: float) -> None:
        if agg_mode not in AGG_MODES:
            raise ValueError(f"unknown loss_agg_mode {agg_mode!r}; known: {list(AGG_MODES)}")
        if agg_mode == "seq-mean" and not self.sequence_level:
            raise ValueError(f"loss_agg_mode 'seq-mean' is for sequence-level losses; {self.name!r} is token-level")
        if not kl_coef >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        if kl_coef > 0 and inputs.ref_logprobs is None:
            raise ValueError(f"kl_coef={kl_coef} > 0 needs LossInputs.ref_logprobs (reference policy log-probs)")
        if entropy_coef != 0 and inputs.entropy is None:
            raise ValueError(f"entropy_coef={entropy_coef} needs LossInputs.entropy")
        if self.sequence_level and inputs.token_weights is not None:
            raise ValueError(f"token_weights are not supported by the sequence-level loss {self.name!r}")


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(
    name: str, *, default_agg_mode: str, sequence_level: bool = False
) -> Callable[[LossBody], LossBody]:
    """Decorator: register ``body(x: Prepared, *, hparam=default, ...) -> PolicyTerms`` as ``name``.

    Hyperparameters are the body's keyword-only arguments; their defaults live
    in its signature only. Registering a name twice raises.
    """
    if default_agg_mode not in AGG_MODES:
        raise ValueError(f"unknown default_agg_mode {default_agg_mode!r}; known: {list(AGG_MODES)}")

    def decorator(body: LossBody) -> LossBody:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered ({POLICY_LOSSES[name].body.__qualname__})")
        params = inspect.signature(body).parameters.values()
        clash = sorted({p.name for p in params} & ({"loss_agg_mode"} | set(COMMON_HPARAMS)))
        if clash:
            raise ValueError(f"loss {name!r} must not redefine the shared hyperparameters {clash}")
        POLICY_LOSSES[name] = PolicyLoss(name, body, default_agg_mode, sequence_level)
        return body

    return decorator


def get_policy_loss(name: str) -> PolicyLoss:
    """The registered loss ``name``; unknown names raise listing the known ones."""
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; known: {sorted(POLICY_LOSSES)}") from None


def compute_policy_loss(name: str, inputs: LossInputs, **hparams: Any) -> LossOutputs:
    """Run the registered loss ``name`` on ``inputs`` with keyword ``hparams``."""
    return get_policy_loss(name)(inputs, **hparams)


def policy_loss_hparams(name: str) -> dict[str, Any]:
    """Accepted hyperparameters of loss ``name`` and their defaults (for settings and docs)."""
    return get_policy_loss(name).hparam_defaults


# --------------------------------------------------------------------- assembly
def _assemble(
    x: Prepared,
    terms: PolicyTerms,
    agg_mode: str,
    kl_coef: float,
    entropy_coef: float,
    global_denominator: float | torch.Tensor | None,
) -> LossOutputs:
    """Aggregate the policy term, add KL / entropy terms, compute metrics."""
    if terms.seq_loss is not None:
        policy_values = terms.seq_loss
    else:
        policy_values = terms.token_loss
        if x.token_weights is not None:
            policy_values = policy_values * x.token_weights
    pg_loss = aggregate(policy_values, x.mask, agg_mode, global_denominator)
    # token-level extra terms under a sequence mode: per-response token mean.
    token_mode = "seq-mean-token-mean" if agg_mode == "seq-mean" else agg_mode
    loss = pg_loss
    metrics: dict[str, torch.Tensor] = {"pg_loss": pg_loss.detach()}
    if x.ref_logprobs is not None:
        kl_ref = k3_kl(x.logprobs, x.ref_logprobs)
        if kl_coef > 0:
            loss = loss + kl_coef * aggregate(kl_ref, x.mask, token_mode, global_denominator)
        metrics["kl_ref"] = masked_mean(kl_ref.detach(), x.mask)
    if x.entropy is not None and entropy_coef != 0:
        loss = loss - entropy_coef * aggregate(x.entropy, x.mask, token_mode, global_denominator)
    metrics.update(_metrics(x, terms))
    metrics["loss"] = loss.detach()
    return LossOutputs(loss=loss, metric_tensors=metrics)


@torch.no_grad()
def _metrics(x: Prepared, terms: PolicyTerms) -> dict[str, torch.Tensor]:
    """Clip fractions, IS-ratio / weight statistics, entropy and behaviour KL.

    Clip and dual-clip fractions divide by all valid tokens (ASPO paper
    logging; Archer2.0 divides the dual fractions by the tokens of that
    advantage sign instead). Positive / negative means A > 0 / A < 0 (A = 0
    tokens carry no gradient and count in neither). Statistics over an empty
    subset are 0; ``pos_token_frac`` / ``neg_token_frac`` say when that happens.
    """
    valid = x.mask
    n_valid = valid.sum().clamp_min(1).float()
    pos = valid & (x.advantages > 0)
    neg = valid & (x.advantages < 0)
    weight = terms.weight if x.token_weights is None else terms.weight * x.token_weights
    out = {
        "clipfrac_upper": (terms.clip_upper & valid).sum() / n_valid,
        "clipfrac_lower": (terms.clip_lower & valid).sum() / n_valid,
        "dualclip_frac_pos": (terms.dual_pos & valid).sum() / n_valid,
        "dualclip_frac_neg": (terms.dual_neg & valid).sum() / n_valid,
        "pos_token_frac": pos.sum() / n_valid,
        "neg_token_frac": neg.sum() / n_valid,
        "kl_behaviour": masked_mean(k3_kl(x.logprobs, x.old_logprobs), valid),
    }
    for sign, subset in (("pos", pos), ("neg", neg)):
        out[f"is_ratio_{sign}_mean"] = masked_mean(terms.ratio, subset)
        out[f"is_ratio_{sign}_min"] = _masked_extreme(terms.ratio, subset, largest=False)
        out[f"is_ratio_{sign}_max"] = _masked_extreme(terms.ratio, subset, largest=True)
        out[f"is_weight_{sign}_mean"] = masked_mean(weight, subset)
    if x.entropy is not None:
        out["entropy_mean"] = masked_mean(x.entropy, valid)
    return {k: v.float() for k, v in out.items()}


def _masked_extreme(values: torch.Tensor, subset: torch.Tensor, largest: bool) -> torch.Tensor:
    """Max (or min) over ``subset``; 0 when it is empty."""
    if values.numel() == 0:
        return values.new_zeros(())
    fill = -torch.inf if largest else torch.inf
    filled = torch.where(subset, values, fill)
    extreme = filled.amax() if largest else filled.amin()
    return torch.where(subset.any(), extreme, 0.0)
