"""Policy losses for the trainer: ASPO (arXiv 2510.06062) and its baselines, by name.

The training step (``trainer`` service) builds :class:`LossInputs` from a
micro-batch (current log-probs from ``trainer.logprobs``, behaviour log-probs
and advantages from the ``RolloutGroup`` messages) and calls
:func:`compute_policy_loss` with the configured name and hyperparameters::

    out = compute_policy_loss("aspo", LossInputs(logprobs=lp, old_logprobs=old,
                              advantages=adv, mask=mask, entropy=ent), eps=0.2)
    out.loss.backward(); log(out.metrics)

Registered: aspo, grpo, dapo, cispo, gspo, no_is (see :mod:`trainer.losses.policy`).
New losses register with :func:`register_policy_loss`.
"""

from trainer.losses import policy as _policy  # noqa: F401  (registers the built-in losses)
from trainer.losses.core import (
    AGG_MODES,
    LossInputs,
    LossOutputs,
    aggregate,
    aggregation_count,
    k3_kl,
)
from trainer.losses.registry import (
    COMMON_HPARAMS,
    POLICY_LOSSES,
    PolicyLoss,
    PolicyTerms,
    compute_policy_loss,
    get_policy_loss,
    policy_loss_hparams,
    register_policy_loss,
)

__all__ = [
    "AGG_MODES",
    "COMMON_HPARAMS",
    "POLICY_LOSSES",
    "LossInputs",
    "LossOutputs",
    "PolicyLoss",
    "PolicyTerms",
    "aggregate",
    "aggregation_count",
    "compute_policy_loss",
    "get_policy_loss",
    "k3_kl",
    "policy_loss_hparams",
    "register_policy_loss",
]
