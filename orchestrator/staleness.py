"""Bounded policy lag: admission control and the last-line staleness check.

Convention (docs/architecture.md): policy version N is the weights after N
optimizer updates. Trainer step s (0-based) trains the s-th accepted batch
with weights of version s, so a sample of version v placed in batch s has lag
s - v. Requiring lag <= k for every sample means the sample generated under
version v must land in a batch with index <= v + k, i.e. at most
(v + k + 1) * B samples may ever have been accepted or be in flight, where B
is the batch size in samples. This is AReaL's capacity rule
(max_head_offpolicyness eta): capacity = (eta + v + 1) * B - (accepted + running).
k = 0 makes generation wait for each update: synchronous on-policy RL.

Using the version loaded in the inference engine (not the trainer's latest) as
v is conservative: generation may start slightly later than it could, but a
sample can never exceed the bound because of update latency.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdmissionController:
    """Counts samples and says how many more may start generating now.

    All counts are in samples (not groups); callers admit whole groups, so
    ``can_admit(n)`` asks for room for one group of n.
    """

    batch_size: int            # samples per trainer step (B)
    max_off_policy_steps: int  # k >= 0
    accepted: int = 0          # samples placed into batches so far (trained or queued)
    running: int = 0           # samples being generated or scored

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")
        if self.max_off_policy_steps < 0:
            raise ValueError(f"max_off_policy_steps must be >= 0, got {self.max_off_policy_steps}")

    def capacity(self, policy_version: int) -> int:
        limit = (self.max_off_policy_steps + policy_version + 1) * self.batch_size
        return max(0, limit - (self.accepted + self.running))

    def can_admit(self, n: int, policy_version: int) -> bool:
        return self.capacity(policy_version) >= n

    def start(self, n: int) -> None:
        self.running += n

    def finish(self, n: int, *, accepted: bool) -> None:
        """A group of n left generation: accepted into a batch, or filtered/failed."""
        if n > self.running:
            raise ValueError(f"finishing {n} samples but only {self.running} are running")
        self.running -= n
        if accepted:
            self.accepted += n


def sample_lag(trainer_step: int, oldest_token_version: int) -> int:
    """Lag of a sample trained at ``trainer_step`` whose oldest token is of that version."""
    return trainer_step - oldest_token_version


def is_too_stale(trainer_step: int, oldest_token_version: int, max_off_policy_steps: int) -> bool:
    """True when training the sample now would exceed the lag bound: drop and count it."""
    return sample_lag(trainer_step, oldest_token_version) > max_off_policy_steps
