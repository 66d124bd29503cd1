"""Loop bookkeeping that needs no servers: resumed series, batch stats, control."""

import asyncio

from orchestrator.loop import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import StepRecord
from services.bus.settings import BusSettings


def _orch(tmp_path) -> Orchestrator:
    return Orchestrator(OrchestratorSettings(model="m", run_dir=tmp_path, group_size=2, groups_per_step=1), BusSettings())


def test_resumed_run_reloads_its_series(tmp_path):
    first = _orch(tmp_path)
    first.state.record_step(StepRecord(step=1, values={"reward_mean": 0.25}, lag_histogram={0: 2}))
    first.state.record_step(StepRecord(step=2, eval={"avg@4": 0.5}))
    first.save_results()
    again = _orch(tmp_path)
    again.load_results()
    again.load_results()   # idempotent
    steps = again.state.steps()
    assert [s.step for s in steps] == [1, 2]
    assert steps[0].values == {"reward_mean": 0.25} and steps[0].lag_histogram == {0: 2}
    assert steps[1].eval == {"avg@4": 0.5}


def test_control_before_the_loop_runs_and_stop_ends_admission(tmp_path):
    orch = _orch(tmp_path)
    orch.pause()
    assert orch.paused
    orch.resume()
    assert not orch.paused
    orch.policy_version = 0
    orch.stop()
    assert asyncio.run(orch.admit()) is None
    assert orch.state.status().state == "stopping"
