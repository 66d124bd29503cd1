"""Trainer settings: one pydantic-settings model, ``TrainerSettings``.

Loaded with ``aspo.settings.load_settings(TrainerSettings, yaml_path)``:
YAML < environment (``ASPO_TRAINER_*``, nested with ``__``, e.g.
``ASPO_TRAINER_OPTIMIZER__LR=1e-6``) < explicit overrides. Every default lives
here and only here; the model is frozen after parsing.

Defaults follow the ASPO / Archer2.0 recipe where one exists (lr 1e-6, weight
decay 0.1, grad clip 1.0, 10 warm-up steps; arXiv 2510.06062 section 4) and
verl/prime-rl conventions otherwise. ``ppo_epochs`` and ``mini_batches``
default to 1 x 1; the recipe uses 3 x 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Section):
    """LoRA adapters (peft). Publishing merges them into full weights for vLLM."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0 keeps resume exact).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Module names that get adapters.",
    )


class ModelSettings(_Section):
    """Which causal LM to train and how to hold it."""

    path: str | None = Field(None, description="Local HF model directory (config, safetensors, tokenizer).")
    config: dict[str, Any] | None = Field(
        None,
        description="Random-init instead of loading: LlamaConfig-style kwargs "
        "(tests, benchmarks). Exactly one of path/config.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Weights (and AdamW state) dtype. float32 keeps updates of lr ~1e-6 (bf16 weights "
        "round most of them away); bfloat16 halves memory at that cost.",
    )
    autocast: Literal["auto", "bfloat16", "none"] = Field(
        "auto", description="Compute dtype: auto = bf16 autocast on GPU, none (fp32) on CPU (bf16 is slower there)."
    )
    attn_implementation: str = Field("sdpa", description="transformers attention backend.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    seed: int = Field(0, ge=0, description="Seed for random init and trainer RNGs.")
    lora: LoraSettings = Field(default_factory=LoraSettings)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSettings:
        if (self.path is None) == (self.config is None):
            raise ValueError("set exactly one of model.path (a local HF dir) or model.config (random init)")
        return self


class OptimizerSettings(_Section):
    """AdamW with linear warm-up, then constant or cosine decay."""

    lr: float = Field(1e-6, gt=0, le=1.0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, le=1e-3, description="AdamW epsilon.")
    weight_decay: float = Field(0.1, ge=0, le=1.0, description="AdamW decoupled weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Clip the global grad norm to this (pre-clip norm is logged).")
    warmup_steps: int = Field(10, ge=0, description="Optimizer steps of linear warm-up from 0 to lr.")
    schedule: Literal["constant", "cosine"] = Field("constant", description="After warm-up: constant or cosine.")
    total_steps: int = Field(1000, ge=1, description="Optimizer steps the cosine schedule spans.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of lr.")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must be in [0, 1), got {v}")
        return v


class LossSettings(_Section):
    """Which registered policy loss (trainer.losses.POLICY_LOSSES) and its hparams."""

    name: str = Field("aspo", description="A name in trainer.losses.POLICY_LOSSES (aspo, grpo, dapo, ...).")
    hparams: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword hparams for the loss (loss_agg_mode, kl_coef, entropy_coef, eps...). "
        "Unknown keys are rejected by the loss itself.",
    )

    @field_validator("name")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        from trainer.losses import POLICY_LOSSES

        if v not in POLICY_LOSSES:
            raise ValueError(f"unknown loss {v!r}; known: {sorted(POLICY_LOSSES)}")
        return v

    @model_validator(mode="after")
    def _known_hparams(self) -> LossSettings:
        from trainer.losses import policy_loss_hparams

        accepted = policy_loss_hparams(self.name)
        unknown = sorted(set(self.hparams) - set(accepted))
        if unknown:
            raise ValueError(f"unknown hparams {unknown} for loss {self.name!r}; accepted: {sorted(accepted)}")
        return self


class BatchingSettings(_Section):
    """How a rollout batch becomes optimizer steps."""

    groups_per_step: int = Field(8, ge=1, le=65536, description="RolloutGroups per trainer step (rollout batch).")
    fetch_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="Wait at most this long per fetch before training a partial batch."
    )
    min_groups_per_step: int = Field(1, ge=1, description="Never train fewer groups than this.")
    micro_batch_tokens: int = Field(
        4096, ge=16, description="Token budget per micro-batch, padded (rows x longest sequence)."
    )
    mini_batches: int = Field(1, ge=1, le=1024, description="Optimizer steps per epoch over the rollout batch.")
    ppo_epochs: int = Field(1, ge=1, le=64, description="Passes over each rollout batch.")
    shuffle: bool = Field(True, description="Shuffle samples into mini-batches (seeded by step: resume-exact).")
    old_logprobs: Literal["behaviour", "recompute"] = Field(
        "behaviour",
        description="pi_old for the IS ratio: the engine's behaviour log-probs (ratio = real policy lag) "
        "or recomputed with the trainer's weights at the start of the batch.",
    )
    tis_cap: float | None = Field(
        None, gt=0, description="Truncated IS min(pi_old/pi_behaviour, cap) per token (e.g. 2.0); None = off."
    )
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature used by inference.")
    logprob_chunk_size: int = Field(1024, ge=1, description="Tokens per chunk through the LM head.")
    max_off_policy_steps: int | None = Field(
        8, ge=0, description="Drop samples whose oldest token is more than this many versions behind; None = off."
    )

    @model_validator(mode="after")
    def _consistent(self) -> BatchingSettings:
        if self.min_groups_per_step > self.groups_per_step:
            raise ValueError("min_groups_per_step must be <= groups_per_step")
        return self


class PublishingSettings(_Section):
    """Publishing ``<run>/policy/v<N>`` for inference."""

    every_steps: int = Field(1, ge=1, description="Publish after every k trainer steps.")
    keep_last: int = Field(3, ge=1, le=1000, description="Published versions kept on disk.")


class CheckpointSettings(_Section):
    """Checkpoints under ``<run>/checkpoints/step-<N>``."""

    every_steps: int = Field(10, ge=1, description="Checkpoint every k trainer steps (ack happens after).")
    keep_last: int = Field(2, ge=1, le=1000, description="Checkpoints kept on disk.")
    resume: bool = Field(True, description="Resume from the latest checkpoint in run_dir if there is one.")


class SourceSettings(_Section):
    """Where rollout groups come from: a directory (standalone) or the Redis bus (`aspo run`)."""

    type: Literal["directory", "redis"] = Field(
        "directory",
        description="directory: *.msgpack files, policy versions announced to a file; "
        "redis: the bus's rollout stream (REDIS_URL), versions and metrics broadcast on the bus.",
    )
    path: Path | None = Field(None, description="Directory of *.msgpack RolloutGroup files; default <run>/rollouts.")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Bind address of the health/metrics API.")
    port: int = Field(8100, ge=0, le=65535, description="Port of the health/metrics API (0 = none).")


class TrainerSettings(BaseSettings):
    """Everything the trainer needs; see the section classes for each field."""

    model_config = SettingsConfigDict(
        env_prefix="ASPO_TRAINER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    run_dir: Path = Field(Path("runs/default"), description="Run directory: policy/, checkpoints/, rollouts/.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda if available.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many trainer steps; None = forever.")
    model: ModelSettings
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    loss: LossSettings = Field(default_factory=LossSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    publishing: PublishingSettings = Field(default_factory=PublishingSettings)
    checkpointing: CheckpointSettings = Field(default_factory=CheckpointSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @model_validator(mode="after")
    def _tis_needs_token_level_loss(self) -> TrainerSettings:
        from trainer.losses import get_policy_loss

        if self.batching.tis_cap is not None and get_policy_loss(self.loss.name).sequence_level:
            raise ValueError(f"batching.tis_cap: the sequence-level loss {self.loss.name!r} takes no token weights")
        return self
