"""Every committed run config parses and builds every component's settings."""

from pathlib import Path

import pytest

from aspo.settings import SettingsError
from orchestrator.runconfig import RunConfig, check_stream_capacity

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if not {"trainer", "experiments"} & set(p.parts))  # those are trainer-only configs and grid files


def build_all(cfg: RunConfig) -> dict:
    return {
        "orchestrator": cfg.orchestrator_settings("/models/m", ["http://127.0.0.1:1"], "http://127.0.0.1:2"),
        "trainer": cfg.trainer_settings("/models/m", "cpu", 0),
        "inference": cfg.inference_settings("/models/m", "cpu", 8100),
        "reward": cfg.reward_settings(8090),
        "bus": cfg.bus_settings("redis://127.0.0.1:6379"),
    }


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_committed_run_config_builds(path):
    built = build_all(RunConfig.load(path))
    cfg = RunConfig.load(path)
    orch, trainer = built["orchestrator"], built["trainer"]
    # the values both sides must agree on are the same on both sides
    assert trainer.batching.groups_per_step == orch.groups_per_step == cfg.run.groups_per_step
    assert trainer.batching.max_off_policy_steps == orch.max_off_policy_steps
    assert trainer.batching.temperature == orch.sampling.temperature
    assert trainer.loss.name == cfg.run.loss and trainer.max_steps == orch.total_steps
    check_stream_capacity(trainer, orch, built["bus"])


def test_stream_too_small_for_the_checkpoint_interval_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run: {groups_per_step: 64}\ntrainer: {checkpointing: {every_steps: 20}}\n")
    built = build_all(RunConfig.load(path))
    with pytest.raises(SettingsError, match="bus.max_len"):
        check_stream_capacity(built["trainer"], built["orchestrator"], built["bus"])


def test_expected_configs_exist():
    names = {str(p.relative_to(CONFIGS)) for p in RUN_CONFIGS}
    assert {"default.yaml", "smoke.yaml"} <= names
    assert any(n.startswith("gpu/") for n in names)


def test_shared_value_in_a_component_section_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  batching: {groups_per_step: 3}\n")
    with pytest.raises(SettingsError, match=r"trainer\.batching\.groups_per_step.*run:"):
        RunConfig.load(path).trainer_settings("/m", "cpu", 0)


def test_bad_values_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  group_size: 1\n")
    with pytest.raises(SettingsError, match="run.group_size"):
        RunConfig.load(path)
    path.write_text("run:\n  loss: nope\n")
    with pytest.raises(SettingsError, match="nope"):
        RunConfig.load(path).trainer_settings("/m", "cpu", 0)
    path.write_text("orchestrator:\n  tasks: {type: wikipedia}\n")
    with pytest.raises(SettingsError, match="tasks"):
        RunConfig.load(path).orchestrator_settings("/m", ["u"], "r")
