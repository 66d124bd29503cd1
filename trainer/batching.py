"""From rollout samples to padded micro-batches (pure logic, no model).

A trainer step takes a rollout batch (the samples of several RolloutGroups),
drops stale samples, splits the rest into ``mini_batches`` (one optimizer step
each) and every mini-batch into micro-batches that fit a padded token budget
(gradient accumulation). Only completion tokens contribute to the loss: each
micro-batch carries its completions left-aligned in (B, T) tensors plus the
positions of the hidden states that predict them.

Gradient accumulation must reproduce the mini-batch loss exactly, so each
micro-batch loss divides by the mini-batch's global count (``normaliser``):
the number of completion tokens for ``token-mean`` and the number of sequences
for the ``seq-mean*`` modes (Eq. 1 of arXiv 2510.06062: 1/G sum_i 1/|o_i|
sum_t), never a mean of micro-batch means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.bus.messages import RolloutSample

TOKEN_MEAN_MODES = frozenset({"token-mean"})
SEQUENCE_MEAN_MODES = frozenset({"seq-mean-token-mean", "seq-mean-token-sum", "seq-mean"})


@dataclass(frozen=True)
class TrainSequence:
    """One sample ready for the model; ``old_logprobs`` start as behaviour log-probs."""

    rollout_id: str
    input_ids: np.ndarray           # (P + T,) int64
    prompt_len: int
    behaviour_logprobs: np.ndarray  # (T,) float32
    old_logprobs: np.ndarray        # (T,) float32
    advantage: float
    versions: np.ndarray            # (T,) int32

    @property
    def completion_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


def to_sequence(sample: RolloutSample) -> TrainSequence:
    """Validate a wire sample and turn it into a training sequence."""
    prompt, completion = sample.prompt, sample.completion
    if prompt.size == 0:
        raise ValueError(f"rollout {sample.rollout_id}: empty prompt (the first completion token needs context)")
    if completion.size == 0:
        raise ValueError(f"rollout {sample.rollout_id}: empty completion")
    if not np.isfinite(sample.advantage):
        raise ValueError(f"rollout {sample.rollout_id}: advantage is {sample.advantage}")
    lp = sample.logprobs
    if not np.all(np.isfinite(lp)) or np.any(lp > 1e-4):
        raise ValueError(f"rollout {sample.rollout_id}: behaviour_logprobs must be finite and <= 0")
    ids = np.concatenate([prompt, completion]).astype(np.int64)
    return TrainSequence(
        rollout_id=sample.rollout_id,
        input_ids=ids,
        prompt_len=int(prompt.size),
        behaviour_logprobs=lp.astype(np.float32),
        old_logprobs=lp.astype(np.float32),
        advantage=float(sample.advantage),
        versions=sample.versions.astype(np.int32),
    )


def split_stale(
    samples: Sequence[RolloutSample], current_version: int, max_off_policy_steps: int | None
) -> tuple[list[RolloutSample], list[RolloutSample]]:
    """Split into (kept, dropped): a sample whose oldest token is more than
    ``max_off_policy_steps`` versions behind ``current_version`` is never trained.

    The orchestrator enforces the same bound before sending; this is the last line.
    """
    if max_off_policy_steps is None:
        return list(samples), []
    kept, dropped = [], []
    for s in samples:
        (dropped if current_version - s.min_version > max_off_policy_steps else kept).append(s)
    return kept, dropped


def split_mini_batches(
    seqs: Sequence[TrainSequence], n: int, rng: np.random.Generator | None
) -> list[list[TrainSequence]]:
    """Split into ``n`` near-equal mini-batches (shuffled when ``rng`` is given); empty ones dropped."""
    order = np.arange(len(seqs))
    if rng is not None:
        rng.shuffle(order)
    return [[seqs[i] for i in part] for part in np.array_split(order, n) if len(part)]


@dataclass
class MicroBatch:
    """Right-padded rows plus completion-aligned (B, T) tensors for the loss."""

    input_ids: torch.Tensor        # (B, L) int64, right-padded with 0
    attention_mask: torch.Tensor   # (B, L) int64
    hidden_index: torch.Tensor     # (N,) flat index into (B*L) of hidden states predicting each target
    target_ids: torch.Tensor       # (N,) int64, the completion tokens
    token_index: torch.Tensor      # (N,) flat index into (B*T) of each target in the loss layout
    mask: torch.Tensor             # (B, T) float32, 1 on completion tokens
    old_logprobs: torch.Tensor     # (B, T) float32
    behaviour_logprobs: torch.Tensor  # (B, T) float32
    advantages: torch.Tensor       # (B, T) float32, the sequence advantage broadcast to its tokens
    versions: torch.Tensor         # (B, T) int64
    rows: list[int]                # index of each row's sequence in the packed list

    @property
    def num_tokens(self) -> int:
        return int(self.target_ids.numel())

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device) -> MicroBatch:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device, non_blocking=True))
        return self


def plan_micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group sequence indices so that rows x longest row <= token_budget.

    Sorted by length (longest first) so rows of similar length share a batch
    and padding stays small; a sequence longer than the budget gets its own
    micro-batch rather than being truncated.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    plans: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > token_budget:
            plans.append(current)
            current = []
        current.append(i)
    if current:
        plans.append(current)
    return plans


def collate(seqs: Sequence[TrainSequence], rows: list[int]) -> MicroBatch:
    """Build one right-padded micro-batch from ``seqs[rows]``."""
    chosen = [seqs[i] for i in rows]
    b = len(chosen)
    seq_len = max(len(s.input_ids) for s in chosen)
    comp_len = max(s.completion_len for s in chosen)
    input_ids = torch.zeros(b, seq_len, dtype=torch.long)
    attention = torch.zeros(b, seq_len, dtype=torch.long)
    mask = torch.zeros(b, comp_len)
    old = torch.zeros(b, comp_len)
    behaviour = torch.zeros(b, comp_len)
    adv = torch.zeros(b, comp_len)
    versions = torch.zeros(b, comp_len, dtype=torch.long)
    hidden_idx, target, token_idx = [], [], []
    for r, s in enumerate(chosen):
        n, p, t = len(s.input_ids), s.prompt_len, s.completion_len
        input_ids[r, :n] = torch.from_numpy(s.input_ids)
        attention[r, :n] = 1
        mask[r, :t] = 1.0
        old[r, :t] = torch.from_numpy(s.old_logprobs)
        behaviour[r, :t] = torch.from_numpy(s.behaviour_logprobs)
        adv[r, :t] = s.advantage
        versions[r, :t] = torch.from_numpy(s.versions.astype(np.int64))
        # hidden state at position j predicts token j + 1
        hidden_idx.append(torch.arange(p - 1, n - 1) + r * seq_len)
        target.append(input_ids[r, p:n])
        token_idx.append(torch.arange(t) + r * comp_len)
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=attention,
        hidden_index=torch.cat(hidden_idx),
        target_ids=torch.cat(target),
        token_index=torch.cat(token_idx),
        mask=mask,
        old_logprobs=old,
        behaviour_logprobs=behaviour,
        advantages=adv,
        versions=versions,
        rows=list(rows),
    )


def pack(seqs: Sequence[TrainSequence], token_budget: int) -> list[MicroBatch]:
    """All micro-batches of one mini-batch."""
    lengths = [len(s.input_ids) for s in seqs]
    return [collate(seqs, rows) for rows in plan_micro_batches(lengths, token_budget)]


def normaliser(agg_mode: str, seqs: Sequence[TrainSequence]) -> int:
    """The count the loss divides by over a whole mini-batch, for ``agg_mode``."""
    if agg_mode in TOKEN_MEAN_MODES:
        return sum(s.completion_len for s in seqs)
    if agg_mode in SEQUENCE_MEAN_MODES:
        return len(seqs)
    raise ValueError(
        f"loss_agg_mode {agg_mode!r}: gradient accumulation does not know its normaliser; "
        f"supported: {sorted(TOKEN_MEAN_MODES | SEQUENCE_MEAN_MODES)}"
    )

