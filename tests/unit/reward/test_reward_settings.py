"""Reward settings: YAML sections, env precedence, bounds named in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aspo.settings import SettingsError
from services.reward.cli import load_reward_settings, load_sandbox_settings


def test_yaml_sections_env_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("reward:\n  port: 9001\n  math_workers: 3\n  math_timeout_s: 2.5\nsandbox:\n  workers: 3\n")
    monkeypatch.setenv("ASPO_REWARD_MATH_WORKERS", "4")
    settings = load_reward_settings(config, port=9100)
    assert (settings.port, settings.math_workers, settings.math_timeout_s) == (9100, 4, 2.5)
    sandbox = load_sandbox_settings(config, {"insecure_no_sandbox": True})
    assert sandbox.workers == 3 and sandbox.insecure_no_sandbox is True


def test_top_level_yaml_and_bad_values_name_the_field(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("math_timeout_s: -1\n")
    with pytest.raises(SettingsError, match="math_timeout_s"):
        load_reward_settings(config)
    config.write_text("api_key: short\n")
    with pytest.raises(SettingsError, match="api_key"):
        load_reward_settings(config)
    config.write_text("no_such_setting: 1\n")
    with pytest.raises(SettingsError, match="no_such_setting"):
        load_reward_settings(config)
