import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aspo.settings import SettingsError, load_settings


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASPO_DEMO_", extra="forbid")
    port: int = Field(8000, ge=1, le=65535, description="port")
    name: str = Field("x", description="name")


def test_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9000\nname: from-yaml\n")
    assert load_settings(DemoSettings, cfg).port == 9000
    monkeypatch.setenv("ASPO_DEMO_PORT", "9100")
    s = load_settings(DemoSettings, cfg)
    assert (s.port, s.name) == (9100, "from-yaml")
    assert load_settings(DemoSettings, cfg, port=9200).port == 9200


def test_section_and_errors_name_the_field(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("demo:\n  port: 70000\n")
    with pytest.raises(SettingsError, match="port"):
        load_settings(DemoSettings, cfg, section="demo")
    cfg.write_text("demo:\n  colour: red\n")
    with pytest.raises(SettingsError, match="colour"):
        load_settings(DemoSettings, cfg, section="demo")
    with pytest.raises(SettingsError, match="not found"):
        load_settings(DemoSettings, tmp_path / "missing.yaml")
    cfg.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(DemoSettings, cfg)


def test_env_alias_beats_yaml(tmp_path, monkeypatch):
    from services.bus.settings import BusSettings

    cfg = tmp_path / "bus.yaml"
    cfg.write_text("url: redis://127.0.0.1:1111\n")
    assert load_settings(BusSettings, cfg).url == "redis://127.0.0.1:1111"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:2222")
    assert load_settings(BusSettings, cfg).url == "redis://127.0.0.1:2222"
