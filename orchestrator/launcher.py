"""`aspo run`: the whole system on one machine, each component its own process.

Start order: a private Redis (AOF, in the run dir, unless REDIS_URL is set);
the reward service and the trainer (subprocesses); vLLM (the slowest to start;
the launcher waits until it is healthy); then the orchestrator with its
dashboard. The launcher shows a live status line read from the dashboard's
`/api/status`, stops everything on Ctrl-C (orchestrator first, so in-flight
groups finish and bookkeeping is saved; the trainer checkpoints on SIGTERM),
and fails loudly with the log tail when a component dies. Running it again
with the same run dir resumes: the trainer from its last checkpoint, the
orchestrator from its bookkeeping, Redis from its AOF.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from orchestrator.runconfig import RunConfig, check_stream_capacity
from orchestrator.server import dashboard_file
from services.inference.server import log_tail


PASSIVE_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A component subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name, self.log_path = name, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


class Launcher:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run.run_dir).resolve()
        self.children: dict[str, Child] = {}
        self.redis = None
        self.inference = None
        self.dashboard_url: str | None = None

    # ---------------------------------------------------------------- start
    def write_config(self, name: str, settings, section: str | None = None, extra: dict | None = None) -> Path:  # noqa: ANN001
        data = settings.model_dump(mode="json")
        doc = {section: data, **(extra or {})} if section else data
        path = self.run_dir / "config" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(name, [sys.executable, "-m", "aspo", *args], self.run_dir / "logs" / f"{name}.log", env)
        self.children[name] = child
        return child

    def start(self, say=print) -> None:  # noqa: ANN001
        from services.bus.redis_server import ensure_redis
        from services.bus.settings import BusSettings
        from services.inference.model import resolve_model
        from services.inference.server import InferenceServer

        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from trainer.model import resolve_device

        device = resolve_device(cfg.run.device).type
        say(f"[run] run dir {self.run_dir}, device {device}")
        model_dir = resolve_model(cfg.run.model)
        self.redis = ensure_redis(self.run_dir, BusSettings.model_validate(cfg.bus))
        bus = cfg.bus_settings(self.redis.url)
        # Passive OpenMP waits for every child (vLLM inherits os.environ): trainer and
        # vLLM share the cores, and idle threads spinning (the GNU and Intel OpenMP
        # defaults) slowed both many times over on a shared 2-core box.
        for key, value in PASSIVE_OPENMP.items():
            os.environ.setdefault(key, value)
        env = dict(os.environ, REDIS_URL=self.redis.url)
        reward_port, infer_port, trainer_port = free_port(), free_port(), free_port()
        reward = cfg.reward_settings(reward_port)
        trainer = cfg.trainer_settings(model_dir, device, trainer_port)
        inference = cfg.inference_settings(model_dir, device, infer_port)
        orch_check = cfg.orchestrator_settings(model_dir, ["http://127.0.0.1:1"], "http://127.0.0.1:1")
        check_stream_capacity(trainer, orch_check, bus)
        self.spawn("reward", ["reward", "serve", "--config", str(self.write_config("reward", reward))], env)
        self.spawn("trainer", ["trainer", "serve", "--config", str(self.write_config("trainer", trainer))], env)
        say(f"[run] starting vLLM ({inference.device}) on port {infer_port}; first start can take minutes")
        self.inference = InferenceServer(inference).start()
        self.check_children()
        self.wait_http(f"http://127.0.0.1:{reward_port}/health", "reward", 120)
        orch = cfg.orchestrator_settings(model_dir, self.inference.base_urls, f"http://127.0.0.1:{reward_port}")
        bus_doc = {"bus": bus.model_dump(mode="json", exclude={"url"})}
        path = self.write_config("orchestrator", orch, section="orchestrator", extra=bus_doc)
        dashboard_file(self.run_dir).unlink(missing_ok=True)
        self.spawn("orchestrator", ["orchestrator", "serve", "--config", str(path), "--section", "orchestrator",
                                    "--loss", cfg.run.loss], env)
        self.dashboard_url = self.wait_dashboard(120)
        say(f"[run] dashboard: {self.dashboard_url}")

    def wait_http(self, url: str, name: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_children()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not become healthy at {url} within {timeout_s:.0f} s:\n"
                           f"{log_tail(self.children[name].log_path)}")

    def wait_dashboard(self, timeout_s: float) -> str:
        path = dashboard_file(self.run_dir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_children()
            if path.exists():
                return json.loads(path.read_text())["url"]
            time.sleep(0.5)
        raise RuntimeError(f"the orchestrator did not start within {timeout_s:.0f} s:\n"
                           f"{log_tail(self.children['orchestrator'].log_path)}")

    # ---------------------------------------------------------------- watch
    def check_children(self) -> None:
        for name, child in self.children.items():
            if not child.alive() and not (name == "trainer" and child.proc.returncode == 0):
                raise RuntimeError(f"{name} exited with status {child.proc.returncode}; last log lines "
                                   f"({child.log_path}):\n{log_tail(child.log_path)}")

    def status(self) -> dict:
        return httpx.get(f"{self.dashboard_url}/api/status", timeout=5).json()

    def finished(self) -> bool:
        orch = self.children.get("orchestrator")
        return orch is not None and not orch.alive() and orch.proc.returncode == 0

    # ---------------------------------------------------------------- stop
    def stop(self) -> None:
        """Orchestrator first (finishes in-flight groups), then trainer, reward, vLLM, Redis."""
        for name, grace in (("orchestrator", 60), ("trainer", 120), ("reward", 30)):
            if name in self.children:
                self.children[name].stop(grace)
        if self.inference is not None:
            self.inference.stop()
        if self.redis is not None:
            self.redis.close()
