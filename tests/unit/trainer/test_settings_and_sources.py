"""Trainer settings (every committed config parses; errors name the field) and local sources."""

from pathlib import Path

import msgspec
import pytest
from trainer_helpers import random_samples

from aspo.settings import SettingsError, load_settings
from services.bus.messages import PolicyVersion, RolloutGroup
from trainer.settings import TrainerSettings
from trainer.sources import DirectorySource, FileAnnouncer, InMemorySource, write_group

CONFIGS = sorted((Path(__file__).parents[3] / "configs" / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_committed_trainer_config_parses(path):
    settings = load_settings(TrainerSettings, path)
    assert settings.loss.name in {"aspo", "grpo", "dapo", "cispo", "gspo", "no_is"}


def test_env_beats_yaml_and_errors_name_the_field(tmp_path, monkeypatch):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: {config: {hidden_size: 8}}\noptimizer: {lr: 1.0e-5}\n")
    monkeypatch.setenv("ASPO_TRAINER_BATCHING__PPO_EPOCHS", "3")
    s = load_settings(TrainerSettings, cfg)
    assert (s.optimizer.lr, s.batching.ppo_epochs) == (1e-5, 3)
    cfg.write_text("model: {config: {}}\nloss: {name: aspo, hparams: {epsilon: 0.2}}\n")
    with pytest.raises(SettingsError, match=r"loss.*unknown hparams \['epsilon'\]"):
        load_settings(TrainerSettings, cfg)
    cfg.write_text("model: {config: {}}\nbatching: {mini_batches: 0}\n")
    with pytest.raises(SettingsError, match="batching.mini_batches"):
        load_settings(TrainerSettings, cfg)
    cfg.write_text("model: {path: /m, config: {}}\n")
    with pytest.raises(SettingsError, match="exactly one of model.path"):
        load_settings(TrainerSettings, cfg)
    cfg.write_text("model: {config: {}}\nloss: {name: gspo}\nbatching: {tis_cap: 2.0}\n")
    with pytest.raises(SettingsError, match="tis_cap"):
        load_settings(TrainerSettings, cfg)


def _group(i: int) -> RolloutGroup:
    return RolloutGroup(group_id=f"g{i}", task_id="t", samples=random_samples(2, seed=i, prefix=f"g{i}-"))


def test_directory_source_redelivers_unacked_and_sets_garbage_aside(tmp_path):
    for i in range(3):
        write_group(tmp_path, _group(i))
    (tmp_path / "zz-garbage.msgpack").write_bytes(b"\x93not a group")
    (tmp_path / "half-written.msgpack.tmp").write_bytes(b"partial")  # never read
    src = DirectorySource(tmp_path, poll_interval_s=0.01)
    got = src.fetch(10, timeout_s=0.1)
    assert [g.group_id for g in got] == ["g0", "g1", "g2"]
    assert (tmp_path / "rejected" / "zz-garbage.msgpack").is_file()
    assert "cannot decode" in (tmp_path / "rejected" / "zz-garbage.msgpack.error").read_text()
    assert src.fetch(10, timeout_s=0.05) == []  # in flight: not handed out twice
    src.ack(["g0"])
    assert len(list((tmp_path / "done").glob("*.msgpack"))) == 1
    restarted = DirectorySource(tmp_path, poll_interval_s=0.01)  # a crash before the ack of g1, g2
    assert [g.group_id for g in restarted.fetch(10, timeout_s=0.1)] == ["g1", "g2"]
    restarted.reject_group("g2", "bad sample")
    assert (tmp_path / "rejected" / next(p.name for p in (tmp_path / "rejected").glob("*g2.msgpack"))).is_file()


def test_in_memory_source_acks_and_redelivers(tmp_path):
    src = InMemorySource([_group(i) for i in range(3)])
    assert [g.group_id for g in src.fetch(2, 0.01)] == ["g0", "g1"]
    src.ack(["g0"])
    src.redeliver_pending()
    assert sorted(g.group_id for g in src.fetch(5, 0.01)) == ["g1", "g2"]
    assert src.acked == ["g0"]


def test_file_announcer_appends_and_points_latest(tmp_path):
    ann = FileAnnouncer(tmp_path)
    for v in range(3):
        ann.announce(PolicyVersion(version=v, path=str(tmp_path / f"v{v}"), trainer_step=v))
    lines = (tmp_path / "versions.jsonl").read_text().splitlines()
    assert [msgspec.json.decode(x)["version"] for x in lines] == [0, 1, 2]
    assert msgspec.json.decode((tmp_path / "latest.json").read_bytes())["version"] == 2


def test_the_trainer_section_of_the_default_run_config_parses():
    root = Path(__file__).parents[3] / "configs" / "default.yaml"
    s = load_settings(TrainerSettings, root, section="trainer", model={"path": "/m"})
    assert s.optimizer.lr == 5e-6 and s.checkpointing.every_steps == 5
