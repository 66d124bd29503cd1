"""Typed boundary of the inference service: what the orchestrator sends and gets back.

Pydantic models for sampling requests, completions and weight-update
results, plus the pure parsing of vLLM's ``/inference/v1/generate`` answer
into :class:`Completion` (unit-tested without a server). The orchestrator
turns a ``Completion`` into a ``services.bus.messages.RolloutSample``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# vLLM labels weights it was started with "default"; they are the initial checkpoint.
UNTAGGED_VERSION = "default"


class InferenceProtocolError(ValueError):
    """A server answer that breaks the token-in/token-out contract (names what is wrong)."""


class SamplingRequest(BaseModel):
    """One prompt (already tokenised, chat template applied on our side) and how to sample it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_ids: list[int] = Field(min_length=1, description="Prompt token ids.")
    n: int = Field(1, ge=1, le=1024, description="Samples for this prompt (a GRPO/ASPO group).")
    max_tokens: int = Field(256, ge=1, le=1_048_576)
    temperature: float = Field(1.0, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, description="Sample i of n uses seed + i (vLLM).")
    stop_token_ids: list[int] | None = Field(
        None, description="Extra stop tokens (EOS stops anyway)."
    )
    ignore_eos: bool = Field(False, description="Keep going past EOS (benchmarks).")

    @model_validator(mode="after")
    def _non_negative_ids(self) -> SamplingRequest:
        if any(t < 0 for t in self.prompt_ids):
            raise ValueError("prompt_ids must be non-negative token ids")
        return self

    def to_vllm(self, model: str, request_id: str) -> dict[str, Any]:
        """The JSON body of ``POST /inference/v1/generate``; ``logprobs: 0`` returns the
        sampled token's (processed) log-prob only."""
        params: dict[str, Any] = {
            "n": self.n,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "logprobs": 0,
            "ignore_eos": self.ignore_eos,
        }
        if self.seed is not None:
            params["seed"] = self.seed
        if self.stop_token_ids:
            params["stop_token_ids"] = list(self.stop_token_ids)
        return {
            "request_id": request_id,
            "token_ids": list(self.prompt_ids),
            "sampling_params": params,
            "model": model,
            "stream": False,
        }


class Completion(BaseModel):
    """One sampled completion with what the trainer needs for importance sampling.

    Invariant: ``completion_ids``, ``behaviour_logprobs`` and ``token_versions``
    have one entry per completion token; ``behaviour_logprobs[i]`` is the
    processed log-prob (after temperature/top-p) vLLM sampled token i with, and
    ``token_versions[i]`` the policy version whose weights produced it (a
    rollout that straddles a weight update carries two or more versions).
    """

    model_config = ConfigDict(frozen=True)

    prompt_ids: list[int]
    completion_ids: list[int]
    behaviour_logprobs: list[float]
    token_versions: list[int]
    finish_reason: str = Field(description="'stop' (EOS/stop token), 'length' or 'abort'.")
    replica: str = Field("", description="Base URL of the replica that sampled it.")

    @model_validator(mode="after")
    def _aligned(self) -> Completion:
        n = len(self.completion_ids)
        if len(self.behaviour_logprobs) != n or len(self.token_versions) != n:
            raise ValueError(
                f"completion_ids ({n}), behaviour_logprobs ({len(self.behaviour_logprobs)}) and "
                f"token_versions ({len(self.token_versions)}) must have the same length"
            )
        return self

    @property
    def policy_versions(self) -> list[int]:
        """Distinct versions in token order of first appearance."""
        return list(dict.fromkeys(self.token_versions))


def parse_version(label: str | None) -> int:
    """vLLM weight-version label -> integer policy version ("default" = 0)."""
    if label is None or label == UNTAGGED_VERSION:
        return 0
    try:
        return int(label)
    except ValueError:
        raise InferenceProtocolError(
            f"weight version {label!r} is not an integer policy version; tag weights with "
            "/update_weight_version using integers"
        ) from None


def spans_to_token_versions(spans: list[dict[str, Any]] | None, n_tokens: int) -> list[int]:
    """Expand vLLM's ``weight_versions`` spans ``[{version, start, end}]`` (end exclusive)
    into one version per token; the spans must tile ``[0, n_tokens)`` exactly."""
    if n_tokens == 0:
        return []
    if not spans:
        raise InferenceProtocolError(
            "choice has no weight_versions: start vLLM with --enable-scale-out"
        )
    versions: list[int] = []
    for span in sorted(spans, key=lambda s: int(s["start"])):
        start, end = int(span["start"]), int(span["end"])
        if start != len(versions) or end < start:
            raise InferenceProtocolError(
                f"weight_versions spans do not tile the completion: {spans} for {n_tokens} tokens"
            )
        versions.extend([parse_version(span.get("version"))] * (end - start))
    if len(versions) != n_tokens:
        raise InferenceProtocolError(
            f"weight_versions spans cover {len(versions)} tokens, completion has {n_tokens}"
        )
    return versions


def parse_generate_response(
    payload: dict[str, Any], prompt_ids: list[int], replica: str = ""
) -> list[Completion]:
    """``/inference/v1/generate`` JSON -> completions in choice-index order."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InferenceProtocolError(f"generate answer has no choices: {str(payload)[:300]}")
    out: list[tuple[int, Completion]] = []
    for choice in choices:
        ids = choice.get("token_ids")
        if ids is None:
            raise InferenceProtocolError("choice has no token_ids")
        content = (choice.get("logprobs") or {}).get("content")
        if content is None or len(content) != len(ids):
            got = None if content is None else len(content)
            raise InferenceProtocolError(
                f"choice has {got} log-prob entries for {len(ids)} tokens (request logprobs=0)"
            )
        for i, (tok, entry) in enumerate(zip(ids, content)):
            if int(entry["token_id"]) != int(tok):
                raise InferenceProtocolError(
                    f"log-prob entry {i} is for token {entry['token_id']}, sampled token is {tok}"
                )
        out.append(
            (
                int(choice.get("index", len(out))),
                Completion(
                    prompt_ids=list(prompt_ids),
                    completion_ids=[int(t) for t in ids],
                    behaviour_logprobs=[float(e["logprob"]) for e in content],
                    token_versions=spans_to_token_versions(choice.get("weight_versions"), len(ids)),
                    finish_reason=str(choice.get("finish_reason") or "abort"),
                    replica=replica,
                ),
            )
        )
    return [c for _, c in sorted(out, key=lambda pair: pair[0])]


class ReplicaUpdate(BaseModel):
    """What a weight update did on one replica."""

    url: str
    ok: bool
    version: int | None = Field(description="Version the replica serves after the update.")
    path: str | None = Field(description="Weights dir the replica serves after the update.")
    paused_s: float = Field(0.0, description="Time between /pause and /resume answering.")
    reload_s: float = Field(0.0, description="Time of the in-place reload_weights call.")
    rolled_back: bool = False
    in_rotation: bool = True
    error: str | None = None


class WeightUpdateResult(BaseModel):
    """Outcome of ``update_weights`` across all replicas.

    ``ok``: every replica took ``version``. ``consistent``: every replica still
    in rotation serves the same known version, ``served_version`` (the new one,
    or the previous one after a roll-back). ``replicas`` says per replica what
    happened; a replica taken out of rotation serves nothing the client will use.
    """

    version: int
    path: str
    ok: bool
    consistent: bool
    served_version: int | None
    total_s: float
    max_paused_s: float
    replicas: list[ReplicaUpdate]
    error: str | None = None
