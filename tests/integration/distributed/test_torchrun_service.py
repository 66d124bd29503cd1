"""``torchrun --nproc_per_node=2 aspo trainer serve`` (gloo, CPU) against one process.

The real command line, the real directory source and announcer: rank 0 fetches
and broadcasts, both ranks train, rank 0 publishes, checkpoints and acks.
The published weights, the versions announced, the step log and the
checkpoint (which a single-process trainer resumes) must equal those of the
single-process service fed the same rollout groups.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "trainer"))
from trainer_helpers import random_samples, tiny_settings

from services.bus.messages import RolloutGroup
from trainer.checkpoint import load_checkpoint
from trainer.engine import PolicyTrainer
from trainer.service import TrainerService
from trainer.sources import DirectorySource, FileAnnouncer, write_group

BIN = Path(sys.executable).parent


def settings_for(run_dir: Path):
    return tiny_settings(
        run_dir,
        max_steps=2,
        optimizer={"lr": 1e-2, "eps": 1e-3, "warmup_steps": 0},  # eps: see test_fsdp.OPTIMIZER
        batching={
            "groups_per_step": 2,
            "min_groups_per_step": 2,
            "fetch_timeout_s": 0.5,
            "micro_batch_tokens": 32,
        },
        checkpointing={"every_steps": 1},
        server={"port": 0},
    )


def write_groups(rollouts: Path) -> None:
    for i in range(4):
        samples = random_samples(3, seed=10 + i, prefix=f"g{i}-")
        write_group(rollouts, RolloutGroup(group_id=f"g{i}", task_id=f"t{i}", samples=samples))


@pytest.mark.slow
def test_torchrun_serve_equals_single_process_service(tmp_path):
    sharded_dir, single_dir = tmp_path / "sharded", tmp_path / "single"
    for run in (sharded_dir, single_dir):
        write_groups(run / "rollouts")
    config = tmp_path / "trainer.yaml"
    config.write_text(settings_for(sharded_dir).model_dump_json())  # JSON is YAML
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
        str(BIN / "aspo"),
    ]
    cmd += ["trainer", "serve", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    single = TrainerService(
        settings_for(single_dir),
        DirectorySource(single_dir / "rollouts"),
        FileAnnouncer(single_dir / "policy"),
    )
    single.run()

    # every group trained once and acked once, by rank 0 only
    assert sorted(
        p.name.split("-", 1)[1] for p in (sharded_dir / "rollouts" / "done").iterdir()
    ) == [f"g{i}.msgpack" for i in range(4)]
    announced = [
        json.loads(line)["version"]
        for line in (sharded_dir / "policy/versions.jsonl").read_text().splitlines()
    ]
    assert announced == [0, 1, 2]
    steps = [
        json.loads(line) for line in (sharded_dir / "trainer/steps.jsonl").read_text().splitlines()
    ]
    single_steps = [
        json.loads(line) for line in (single_dir / "trainer/steps.jsonl").read_text().splitlines()
    ]
    assert [s["rollout_ids"] for s in steps] == [s["rollout_ids"] for s in single_steps]
    for got, want in zip(steps, single_steps, strict=True):
        assert got["metrics"]["loss"] == pytest.approx(want["metrics"]["loss"], rel=1e-5)

    got_w, want_w = (
        load_file(sharded_dir / "policy/v2/model.safetensors"),
        load_file(single_dir / "policy/v2/model.safetensors"),
    )
    assert got_w.keys() == want_w.keys()
    for name in want_w:
        torch.testing.assert_close(got_w[name], want_w[name], rtol=1e-5, atol=1e-6, msg=name)

    # the sharded checkpoint is in the single-process format: a plain trainer resumes it
    resumed = PolicyTrainer(settings_for(tmp_path / "resumed"))
    load_checkpoint(resumed, sharded_dir / "checkpoints/step-2")
    assert resumed.step == 2 and resumed.consumed_ids == single.trainer.consumed_ids
    want_state = single.trainer.optimizer.state_dict()["state"]
    got_state = resumed.optimizer.state_dict()["state"]
    assert got_state.keys() == want_state.keys()
    for idx in want_state:
        torch.testing.assert_close(
            got_state[idx]["exp_avg"], want_state[idx]["exp_avg"], rtol=1e-4, atol=1e-7
        )


@pytest.mark.slow
def test_sigterm_stops_every_rank_after_a_final_checkpoint(tmp_path):
    """torchrun forwards SIGTERM to all ranks: rank 0 decides, every rank stops at
    the same step and the final checkpoint (not due by every_steps) is written
    and the trained groups are acked."""
    run = tmp_path / "run"
    write_groups(run / "rollouts")
    settings = settings_for(run).model_copy(
        update={
            "max_steps": None,
            "checkpointing": settings_for(run).checkpointing.model_copy(
                update={"every_steps": 100}
            ),
        }
    )
    config = tmp_path / "trainer.yaml"
    config.write_text(settings.model_dump_json())
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
        str(BIN / "aspo"),
    ]
    cmd += ["trainer", "serve", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    log_path = tmp_path / "torchrun.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            steps = run / "trainer" / "steps.jsonl"
            deadline = time.monotonic() + 150
            while (
                not (steps.exists() and len(steps.read_text().splitlines()) == 2)
                and time.monotonic() < deadline
            ):
                assert proc.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.2)
            assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert "trainer service failed" not in text, text[-3000:]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-2"]
    assert len(list((run / "rollouts" / "done").iterdir())) == 4
