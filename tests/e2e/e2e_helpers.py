"""End-to-end helpers: run `aspo run` for real (Redis, reward, vLLM, trainer, orchestrator)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"


def smoke_config(tmp: Path, **run_overrides) -> Path:  # noqa: ANN003
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["run"].update(run_overrides)
    cfg.setdefault("orchestrator", {}).setdefault("dashboard", {})["port"] = 0
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_run(config: Path, log: Path, sigint_ignored: bool = False) -> subprocess.Popen:
    """`aspo run`; `sigint_ignored` starts it the way `nohup aspo run &` (or a CI script) does."""
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(
        [sys.executable, "-m", "aspo", "run", "--config", str(config)],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO, preexec_fn=preexec,
    )


def dashboard_url(run_dir: Path, proc: subprocess.Popen, timeout_s: float = 900) -> str:
    path = run_dir / "orchestrator" / "dashboard.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "aspo run exited before the dashboard came up"
        if path.exists():
            return json.loads(path.read_text())["url"]
        time.sleep(1)
    raise AssertionError("dashboard did not come up")


def wait_status(url: str, proc: subprocess.Popen, pred, timeout_s: float = 900) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "aspo run exited early"
        try:
            status = httpx.get(f"{url}/api/status", timeout=5).json()
            if pred(status):
                return status
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("condition not reached in time")


def effective_trainer_steps(run_dir: Path) -> dict[int, dict]:
    """The trainer's own step records; a step re-run after a resume replaces the older row."""
    rows: dict[int, dict] = {}
    for line in (run_dir / "trainer" / "steps.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row
    return rows
