"""Launcher flags, settings bounds and model resolution (no server, no conversion)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aspo.settings import SettingsError, load_settings
from services.inference import model as model_mod
from services.inference.model import MARKER_FILE, ModelPreparationError, resolve_model
from services.inference.server import build_command, build_env
from services.inference.settings import InferenceSettings


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_cpu_command_has_the_rl_flags_and_fp32() -> None:
    s = InferenceSettings(port=9000, replicas=2, enforce_eager=True, seed=5, served_model_name="pi")
    cmd = build_command(s, "/m", 9001)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-scale-out" in cmd and "--enforce-eager" in cmd
    assert flag(cmd, "--logprobs-mode") == "processed_logprobs"
    assert flag(cmd, "--dtype") == "float32" and flag(cmd, "--port") == "9001"
    assert flag(cmd, "--seed") == "5" and flag(cmd, "--served-model-name") == "pi"
    assert flag(cmd, "--generation-config") == "vllm"
    assert s.base_urls() == ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]


def test_gpu_command_drops_cpu_choices() -> None:
    cmd = build_command(InferenceSettings(device="cuda"), "/m", 8100)
    assert flag(cmd, "--dtype") == "bfloat16" and "--gpu-memory-utilization" in cmd
    assert "--enforce-eager" not in cmd


def test_env_enables_dev_mode_and_splits_threads_over_replicas() -> None:
    env = build_env(InferenceSettings(replicas=2, omp_num_threads=3), base={"PATH": "/bin"})
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["OMP_NUM_THREADS"] == "3"
    assert env["PATH"] == "/bin" and "VLLM_CPU_KVCACHE_SPACE" in env
    gpu = build_env(InferenceSettings(device="cuda"), base={})
    assert "OMP_NUM_THREADS" not in gpu and gpu["VLLM_SERVER_DEV_MODE"] == "1"


def test_settings_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="replicas"):
        load_settings(InferenceSettings, replicas=0)
    with pytest.raises(SettingsError, match="past 65535"):
        load_settings(InferenceSettings, port=65535, replicas=2)
    monkeypatch.setenv("ASPO_INFERENCE_PORT", "9100")
    assert load_settings(InferenceSettings).port == 9100


def test_resolve_model_local_dir_hub_id_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "m"
    good.mkdir()
    (good / "config.json").write_text(json.dumps({}))
    assert resolve_model(good) == str(good.resolve())
    assert (
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    with pytest.raises(ModelPreparationError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelPreparationError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))


def test_prepared_dir_with_matching_marker_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "src.gguf"
    gguf.write_bytes(b"GGUF fake bytes")
    monkeypatch.setattr(model_mod, "_gguf_source", lambda: gguf)
    converted: list[Path] = []
    monkeypatch.setattr(model_mod, "_convert", lambda _g, dest: converted.append(dest))
    monkeypatch.setenv("ASPO_MODEL_CACHE", str(tmp_path / "cache"))
    first = model_mod.prepare_default_model()
    assert first == tmp_path / "cache" / "SmolLM2-135M-Instruct" and len(converted) == 1
    assert model_mod.prepare_default_model() == first and len(converted) == 1  # marker matches
    gguf.write_bytes(b"GGUF other bytes")  # a new wheel: the marker no longer matches
    model_mod.prepare_default_model()
    assert len(converted) == 2 and (
        first / MARKER_FILE
    ).read_text().strip() == model_mod._file_digest(gguf)
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_start_refuses_a_port_already_in_use() -> None:
    import socket

    from services.inference.server import InferenceServer, ServerStartError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = InferenceServer(InferenceSettings(model="/nonexistent", port=port))
        with pytest.raises(ServerStartError) as info:
            server.start()
    assert str(port) in str(info.value) and server.poll() == []
