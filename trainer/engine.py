"""The training step: rollout samples in, optimizer steps out, metrics back.

``PolicyTrainer.train_step(samples)`` is one *trainer step*: it trains one
rollout batch with ``ppo_epochs`` x ``mini_batches`` optimizer steps (AdamW,
grad-norm clipping, warm-up schedule), accumulating gradients over
micro-batches with the loss's global normaliser (see ``trainer.batching``).

Versions: the trainer's policy version == ``step`` == the number of trainer
steps (rollout batches) trained since v0, the initial weights. With the
default 1 x 1 that is also the number of optimizer steps; with the Archer2.0
recipe (4 mini-batches x 3 epochs) one version spans 12 optimizer steps,
because inference only ever sees the weights at the end of a batch. Lag of a
token = ``step - token_version`` (what the orchestrator computes too).

``old_logprobs`` are by default the behaviour log-probs from the messages, so
the IS ratio pi_theta / pi_old measures the real policy lag (this is what ASPO
flips for positive-advantage tokens, arXiv 2510.06062 section 3). With
``old_logprobs: recompute`` they are recomputed with the trainer's weights at
the start of the batch (Archer2.0 / verl), and ``tis_cap`` adds truncated IS
for engine/trainer mismatch: each token's policy-loss term is multiplied by
the detached weight min(pi_old / pi_behaviour, cap) (verl/slime/SkyRL, cap
2.0; ``LossInputs.token_weights``). Every loss's gradient is -A * w per token,
so this scales the token's gradient by the TIS weight and never changes which
clip branch applies. With ``old_logprobs: behaviour`` the weight is 1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from services.bus.messages import RolloutSample
from trainer import batching
from trainer.batching import MicroBatch, TrainSequence
from trainer.model import (
    autocast_for,
    build_model,
    build_reference,
    completion_logprobs,
    is_lora,
    reference_logprobs,
    resolve_device,
)
from trainer.settings import OptimizerSettings, TrainerSettings

log = logging.getLogger(__name__)


def lr_lambda(opt: OptimizerSettings):  # -> Callable[[int], float]
    """Multiplier of ``opt.lr`` after ``s`` optimizer steps: linear warm-up
    (lr * (s+1)/warmup, so the first step already moves), then constant or cosine."""

    def factor(s: int) -> float:
        if s < opt.warmup_steps:
            return (s + 1) / opt.warmup_steps
        if opt.schedule == "constant":
            return 1.0
        span = max(1, opt.total_steps - opt.warmup_steps)
        progress = min(1.0, (s - opt.warmup_steps) / span)
        return opt.min_lr_ratio + (1 - opt.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def resolve_agg_mode(loss_name: str, hparams: dict[str, Any]) -> str:
    """The loss's aggregation mode: the explicit hparam, else the loss's registered default."""
    from trainer.losses import policy_loss_hparams

    return str(hparams.get("loss_agg_mode", policy_loss_hparams(loss_name)["loss_agg_mode"]))


class PolicyTrainer:
    """Holds the model, optimizer and schedule; trains rollout batches."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.autocast = settings.model.autocast
        torch.manual_seed(settings.model.seed)
        self.model = build_model(settings.model, self.device)
        self.model.train()
        self.hparams = dict(settings.loss.hparams)
        self.agg_mode = resolve_agg_mode(settings.loss.name, self.hparams)
        batching.normaliser(self.agg_mode, [])  # fail now on an unsupported mode
        wants_ref = float(self.hparams.get("kl_coef", 0.0)) > 0
        self.uses_reference = wants_ref
        self.reference = build_reference(self.model) if wants_ref else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        opt = settings.optimizer
        self.optimizer = torch.optim.AdamW(
            self.params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(opt))
        self.step = 0
        self.optimizer_steps = 0
        self.consumed_ids: set[str] = set()

    @property
    def version(self) -> int:
        """The policy version the weights are at (== trainer steps since v0)."""
        return self.step

    # ------------------------------------------------------------------ step
    def train_step(self, samples: Sequence[RolloutSample]) -> dict[str, float]:
        """Train one rollout batch; return the step's metrics (floats).

        Samples already trained (``consumed_ids``) or repeated in the batch are
        skipped; stale ones (``max_off_policy_steps``) are dropped, counted and
        never trained. A malformed sample raises ValueError before any update.
        """
        cfg = self.settings.batching
        fresh, seen = [], set()
        for s in samples:
            if s.rollout_id not in self.consumed_ids and s.rollout_id not in seen:
                fresh.append(s)
                seen.add(s.rollout_id)
        duplicates = len(samples) - len(fresh)
        kept, stale = batching.split_stale(fresh, self.version, cfg.max_off_policy_steps)
        seqs = [batching.to_sequence(s) for s in kept]
        metrics: dict[str, float] = {
            "step": float(self.step + 1),
            "num_samples": float(len(seqs)),
            "num_tokens": float(sum(s.completion_len for s in seqs)),
            "dropped_stale": float(len(stale)),
            "dropped_duplicate": float(duplicates),
        }
        if not seqs:
            log.warning("trainer step skipped: no trainable samples (%d stale, %d duplicate)", len(stale), duplicates)
            return metrics
        metrics.update(self._lag_metrics(seqs))
        t0 = time.perf_counter()
        if cfg.old_logprobs == "recompute":
            seqs, mismatch = self._recompute_old_logprobs(seqs)
            metrics["behaviour_old_abs_logprob_diff"] = mismatch
        metrics["time_recompute_s"] = time.perf_counter() - t0
        metrics.update(self._train_epochs(seqs))
        self.step += 1
        self.consumed_ids.update(s.rollout_id for s in seqs)
        busy = metrics["time_forward_backward_s"] + metrics["time_optimizer_s"] + metrics["time_recompute_s"]
        metrics["tokens_per_s"] = metrics["num_tokens"] * cfg.ppo_epochs / max(busy, 1e-9)
        return metrics

    def _lag_metrics(self, seqs: Sequence[TrainSequence]) -> dict[str, float]:
        lags = np.concatenate([self.version - s.versions.astype(np.int64) for s in seqs])
        return {"policy_lag_mean": float(lags.mean()), "policy_lag_max": float(lags.max())}

    def _train_epochs(self, seqs: list[TrainSequence]) -> dict[str, float]:
        cfg = self.settings.batching
        sums: dict[str, float] = {}
        grad_norms: list[float] = []
        timing = {"time_forward_backward_s": 0.0, "time_optimizer_s": 0.0}
        entropy_sum = torch.zeros((), device=self.device)
        entropy_tokens = 0
        for epoch in range(cfg.ppo_epochs):
            rng = np.random.default_rng([self.settings.model.seed, self.step, epoch]) if cfg.shuffle else None
            for mini in batching.split_mini_batches(seqs, cfg.mini_batches, rng):
                out = self._optimizer_step(mini)
                for k, v in out["metrics"].items():
                    sums[k] = sums.get(k, 0.0) + v
                grad_norms.append(out["grad_norm"])
                timing["time_forward_backward_s"] += out["time_fb"]
                timing["time_optimizer_s"] += out["time_opt"]
                entropy_sum += out["entropy_sum"]
                entropy_tokens += out["tokens"]
        n = len(grad_norms)
        result = {k: v / n for k, v in sums.items()}
        result.update(timing)
        result["grad_norm"] = float(np.mean(grad_norms))
        result["grad_norm_max"] = float(np.max(grad_norms))
        result["optimizer_steps"] = float(n)
        result["skipped_nonfinite"] = float(sum(not math.isfinite(g) for g in grad_norms))
        result["entropy"] = float(entropy_sum) / max(entropy_tokens, 1)
        return result

    def accumulate_gradients(self, mini: list[TrainSequence]) -> tuple[dict[str, float], torch.Tensor]:
        """Fill ``.grad`` with the gradient of the whole mini-batch's loss.

        Every micro-batch loss divides by the mini-batch's global count
        (``LossInputs.global_denominator``: tokens for token-mean, responses
        for the seq-* modes), so the micro-batch losses add up to the loss
        aggregated over the whole mini-batch, not a mean of micro-batch means.
        Metrics: loss terms are summed the same way; ``*_min``/``*_max`` take
        the extreme; the rest are token-weighted means. Returns them and the
        sum of token entropies.
        """
        total = batching.normaliser(self.agg_mode, mini)
        mini_tokens = sum(s.completion_len for s in mini)
        self.optimizer.zero_grad(set_to_none=True)
        entropy_sum = torch.zeros((), device=self.device)
        outputs = []
        for mb in batching.pack(mini, self.settings.batching.micro_batch_tokens):
            mb.to(self.device)
            out, entropy = self._micro_loss(mb, total)
            out.loss.backward()
            entropy_sum += (entropy.detach() * mb.mask).sum()
            outputs.append((out, mb.num_tokens / mini_tokens))
        return _combine_metrics([(o.metrics, w) for o, w in outputs]), entropy_sum

    def _optimizer_step(self, mini: list[TrainSequence]) -> dict[str, Any]:
        """Accumulate over micro-batches, clip (pre-clip norm reported), step."""
        t0 = time.perf_counter()
        metric_sums, entropy_sum = self.accumulate_gradients(mini)
        t1 = time.perf_counter()
        metric_sums["lr"] = float(self.optimizer.param_groups[0]["lr"])  # the lr this step used
        grad_norm = self.clip_gradients()
        if math.isfinite(grad_norm):
            self.optimizer.step()
        else:
            log.error("non-finite grad norm %s at step %d: optimizer step skipped", grad_norm, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.optimizer_steps += 1
        return {
            "metrics": metric_sums,
            "grad_norm": grad_norm,
            "time_fb": t1 - t0,
            "time_opt": time.perf_counter() - t1,
            "entropy_sum": entropy_sum,
            "tokens": sum(s.completion_len for s in mini),
        }

    def _micro_loss(self, mb: MicroBatch, global_denominator: int) -> tuple[Any, torch.Tensor]:
        from trainer.losses import LossInputs, compute_policy_loss

        cfg = self.settings.batching
        with autocast_for(self.device, self.autocast):
            logprobs, entropy = self.policy_logprobs(mb)
            ref = self.reference_logprobs(mb) if self.uses_reference else None
        tis = None
        if cfg.tis_cap is not None:  # truncated IS: min(pi_old / pi_behaviour, cap) per token
            tis = torch.exp(mb.old_logprobs - mb.behaviour_logprobs).clamp(max=cfg.tis_cap)
        inputs = LossInputs(
            logprobs=logprobs.float(),
            old_logprobs=mb.old_logprobs,
            advantages=mb.advantages,
            mask=mb.mask,
            entropy=entropy.float(),
            ref_logprobs=None if ref is None else ref.float(),
            token_weights=tis,
            global_denominator=float(global_denominator),
        )
        return compute_policy_loss(self.settings.loss.name, inputs, **self.hparams), entropy

    # Hooks that trainer.distributed (FSDP2) overrides: sharded modules must be
    # called through their FSDP root, and their grad norm is a DTensor.
    def policy_logprobs(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, entropies) of the completion tokens under the trained policy, (B, T)."""
        cfg = self.settings.batching
        return completion_logprobs(self.model, mb, cfg.temperature, cfg.logprob_chunk_size)

    def reference_logprobs(self, mb: MicroBatch) -> torch.Tensor:
        """Log-probs under the frozen reference policy (for the KL term), (B, T)."""
        cfg = self.settings.batching
        return reference_logprobs(self.model, self.reference, mb, cfg.temperature, cfg.logprob_chunk_size)

    def clip_gradients(self) -> float:
        """Clip the global grad norm to ``max_grad_norm``; return the pre-clip norm."""
        return float(torch.nn.utils.clip_grad_norm_(self.params, self.settings.optimizer.max_grad_norm))

    @torch.no_grad()
    def _recompute_old_logprobs(self, seqs: list[TrainSequence]) -> tuple[list[TrainSequence], float]:
        """pi_old with the current weights, before any update on this batch."""
        cfg = self.settings.batching
        out = list(seqs)
        diff_sum, count = 0.0, 0
        for mb in batching.pack(seqs, cfg.micro_batch_tokens):
            mb.to(self.device)
            with autocast_for(self.device, self.autocast):
                lp, _ = self.policy_logprobs(mb)
            lp = lp.float().cpu().numpy()
            for r, i in enumerate(mb.rows):
                t = seqs[i].completion_len
                out[i] = dataclasses.replace(seqs[i], old_logprobs=lp[r, :t].copy())
                diff_sum += float(np.abs(lp[r, :t] - seqs[i].behaviour_logprobs).sum())
                count += t
        return out, diff_sum / max(count, 1)

    # ------------------------------------------------------------ state
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Weights a checkpoint must hold: all of them, or only the adapters with LoRA."""
        if is_lora(self.model):
            names = {n for n, p in self.model.named_parameters() if p.requires_grad}
            return {k: v for k, v in self.model.state_dict().items() if k in names}
        return self.model.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=not is_lora(self.model))
        if unexpected or (is_lora(self.model) and any(n in missing for n in self.trainable_state())):
            raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


_SUMMED_METRICS = frozenset({"loss", "pg_loss"})


def _combine_metrics(parts: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Micro-batch metrics -> mini-batch metrics (see ``accumulate_gradients``)."""
    out: dict[str, float] = {}
    for metrics, token_share in parts:
        for k, v in metrics.items():
            if k in _SUMMED_METRICS:
                out[k] = out.get(k, 0.0) + v
            elif k.endswith("_min"):
                out[k] = min(out.get(k, v), v)
            elif k.endswith("_max"):
                out[k] = max(out.get(k, v), v)
            else:
                out[k] = out.get(k, 0.0) + v * token_share
    return out
