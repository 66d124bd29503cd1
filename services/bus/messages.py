"""Wire messages between components (msgspec Structs, MessagePack on the wire).

Token ids and log-probs travel as packed little-endian arrays (``bytes``), not
JSON float lists: a 16 x 1k-token group is ~200 KB instead of ~1 MB, and
decoding is a zero-copy ``np.frombuffer``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import numpy as np

TOKEN_DTYPE = np.dtype("<i4")
LOGPROB_DTYPE = np.dtype("<f4")


def pack_ints(values: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(values, dtype=TOKEN_DTYPE).tobytes()


def pack_floats(values: Sequence[float] | np.ndarray) -> bytes:
    return np.asarray(values, dtype=LOGPROB_DTYPE).tobytes()


def unpack_ints(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=TOKEN_DTYPE)


def unpack_floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=LOGPROB_DTYPE)


class RolloutSample(msgspec.Struct, frozen=True, kw_only=True):
    """One sampled response to a prompt, scored, with its advantage.

    Invariants: ``completion_ids``, ``behaviour_logprobs`` and
    ``token_versions`` hold the same number of elements (one per completion
    token); ``behaviour_logprobs[i]`` is the log-prob the inference engine
    sampled ``completion_ids[i]`` with; ``token_versions[i]`` is the policy
    version that produced token i. ``rollout_id`` is unique over a run: the
    trainer trains each id at most once.
    """

    rollout_id: str
    prompt_ids: bytes          # int32 (P,)
    completion_ids: bytes      # int32 (T,)
    behaviour_logprobs: bytes  # float32 (T,)
    token_versions: bytes      # int32 (T,)
    reward: float
    advantage: float
    finish_reason: str = "stop"

    @classmethod
    def build(
        cls,
        *,
        rollout_id: str,
        prompt_ids: Sequence[int] | np.ndarray,
        completion_ids: Sequence[int] | np.ndarray,
        behaviour_logprobs: Sequence[float] | np.ndarray,
        token_versions: Sequence[int] | np.ndarray,
        reward: float,
        advantage: float,
        finish_reason: str = "stop",
    ) -> "RolloutSample":
        n = len(completion_ids)
        if len(behaviour_logprobs) != n or len(token_versions) != n:
            raise ValueError(
                f"rollout {rollout_id}: completion_ids ({n}), behaviour_logprobs "
                f"({len(behaviour_logprobs)}) and token_versions ({len(token_versions)}) "
                "must have the same length"
            )
        return cls(
            rollout_id=rollout_id,
            prompt_ids=pack_ints(prompt_ids),
            completion_ids=pack_ints(completion_ids),
            behaviour_logprobs=pack_floats(behaviour_logprobs),
            token_versions=pack_ints(token_versions),
            reward=float(reward),
            advantage=float(advantage),
            finish_reason=finish_reason,
        )

    @property
    def prompt(self) -> np.ndarray:
        return unpack_ints(self.prompt_ids)

    @property
    def completion(self) -> np.ndarray:
        return unpack_ints(self.completion_ids)

    @property
    def logprobs(self) -> np.ndarray:
        return unpack_floats(self.behaviour_logprobs)

    @property
    def versions(self) -> np.ndarray:
        return unpack_ints(self.token_versions)

    @property
    def min_version(self) -> int:
        """Oldest policy version among the tokens (the one that bounds lag)."""
        v = self.versions
        return int(v.min()) if v.size else -1


class RolloutGroup(msgspec.Struct, frozen=True, kw_only=True):
    """The n scored samples of one prompt (orchestrator -> trainer).

    Invariant: every sample belongs to this group's prompt; advantages were
    computed over exactly these samples (group normalisation happens in the
    orchestrator, the trainer stays algorithm-blind).
    """

    group_id: str
    task_id: str
    samples: list[RolloutSample]
    created_at: float = msgspec.field(default_factory=time.time)

    @property
    def min_version(self) -> int:
        return min((s.min_version for s in self.samples), default=-1)


class PolicyVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A published policy (trainer -> orchestrator and inference).

    ``path`` is an HF safetensors directory (``<run>/policy/v<version>``) that
    is complete when this message is sent (written to a temp dir, then renamed).
    """

    version: int
    path: str
    trainer_step: int
    published_at: float = msgspec.field(default_factory=time.time)


class MetricEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Numbers from any component for the dashboard (all -> orchestrator)."""

    source: str
    step: int
    values: dict[str, float]
    time: float = msgspec.field(default_factory=time.time)


_encoder = msgspec.msgpack.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decoder(kind: type[msgspec.Struct]) -> msgspec.msgpack.Decoder:
    """A typed decoder; it raises msgspec.ValidationError on a malformed payload."""
    return msgspec.msgpack.Decoder(kind)
