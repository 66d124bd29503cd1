"""The grid runner's resume logic, with `aspo run` replaced by a fake that writes run files.

The real `aspo run` is exercised by tests/e2e/test_experiment_ci_grid.py; here
only the decisions around it: skip, condense, resume, wipe, refuse, record failures.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from experiment_fakes import fake_finished_run, trainer_row, write_orchestrator, write_trainer_rows
from rich.console import Console

from orchestrator.experiments.grid import GridError, expand, load_grid
from orchestrator.experiments.runner import GridRunner

REPO = Path(__file__).resolve().parents[3]


class FakeRunner(GridRunner):
    """Launching a cell writes a finished run (or fails, for cells named in `fail`)."""

    def __init__(self, *args, fail: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, console=Console(quiet=True), **kwargs)
        self.fail, self.launched = fail, []

    def launch(self, i, cell, run_dir):
        self.launched.append(cell.name)
        assert yaml.safe_load((run_dir / "cell.yaml").read_text()) == cell.config
        if cell.name in self.fail:
            (run_dir / "experiment.log").write_text("vLLM died: out of memory\n")
            return 1
        fake_finished_run(run_dir, int(cell.config["run"]["total_steps"]))
        return 0


def grid(tmp_path: Path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": str(REPO / "configs" / "smoke.yaml"),
                                    "axes": {"loss": ["aspo", "grpo", "dapo"]}, "budget": {"total_steps": 2}}))
    spec, base = load_grid(path)
    results = tmp_path / "results"
    return spec, expand(spec, base, results), results


def test_a_second_invocation_skips_done_cells_and_resumes_the_rest(tmp_path):
    spec, cells, results = grid(tmp_path)
    first = FakeRunner(spec, cells, results, fail=("grpo",), grid_file=tmp_path / "grid.yaml")
    assert first.run() == 1
    assert first.launched == ["aspo", "grpo", "dapo"]  # a failure does not stop the grid
    index = json.loads((results / "grid.json").read_text())
    assert index["cells"]["grpo"]["state"] == "failed" and "out of memory" in index["cells"]["grpo"]["log_tail"]
    assert index["cells"]["aspo"]["state"] == "done" and index["order"] == ["aspo", "grpo", "dapo"]
    assert index["grid_file"] == (tmp_path / "grid.yaml").as_posix()
    assert (results / "aspo" / "summary.json").is_file() and not (results / "aspo" / "checkpoints").exists()
    second = FakeRunner(spec, cells, results)
    assert second.run() == 0
    assert second.launched == ["grpo"]
    index = json.loads((results / "grid.json").read_text())
    assert {c["state"] for c in index["cells"].values()} == {"done"}
    assert index["grid_file"] == (tmp_path / "grid.yaml").as_posix()  # kept by a runner not told the file
    assert index["cells"]["grpo"]["attempts"] == 2
    assert json.loads((results / "grpo" / "summary.json").read_text())["attempts"] == 2


def test_a_finished_but_uncondensed_cell_is_condensed_without_a_run(tmp_path):
    spec, cells, results = grid(tmp_path)
    fake_finished_run(results / "aspo", 2)
    runner = FakeRunner(spec, cells, results, keep_artifacts=True)
    assert runner.run() == 0
    assert "aspo" not in runner.launched
    assert (results / "aspo" / "summary.json").is_file() and (results / "aspo" / "checkpoints").is_dir()


def test_an_interrupted_cell_is_relaunched_on_its_own_dir_and_keeps_its_first_series(tmp_path):
    spec, cells, results = grid(tmp_path)
    run = results / "aspo"
    write_trainer_rows(run, [trainer_row(1, {"0": 8})])
    write_orchestrator(run, "running", [{"step": 1, "values": {"reward_mean": 0.9}, "lag_histogram": {}, "eval": None}])
    runner = FakeRunner(spec, cells[:1], results)
    assert runner.run() == 0 and runner.launched == ["aspo"]
    assert (run / "experiment" / "orchestrator-steps-000.jsonl").is_file()


def test_an_inconsistent_cell_is_wiped_and_rerun(tmp_path):
    spec, cells, results = grid(tmp_path)
    run = results / "aspo"
    write_trainer_rows(run, [trainer_row(s, {"0": 8}) for s in (1, 2, 3, 4, 5)])  # another budget ran here
    write_orchestrator(run, "finished", [])
    (run / "stray.txt").write_text("from another run")
    runner = FakeRunner(spec, cells[:1], results)
    assert runner.run() == 0 and runner.launched == ["aspo"]
    assert not (run / "stray.txt").exists()
    assert json.loads((run / "summary.json").read_text())["steps_trained"] == 2


def test_a_cell_whose_folder_was_deleted_reruns_with_its_wall_time_and_attempts_reset(tmp_path):
    spec, cells, results = grid(tmp_path)
    assert FakeRunner(spec, cells[:1], results, fail=("aspo",)).run() == 1
    assert FakeRunner(spec, cells[:1], results).run() == 0
    index = json.loads((results / "grid.json").read_text())["cells"]["aspo"]
    assert index["attempts"] == 2
    index_path = results / "grid.json"
    stored = json.loads(index_path.read_text())
    stored["cells"]["aspo"]["wall_s"] = 3600.0  # an hour from the deleted run's attempts
    index_path.write_text(json.dumps(stored))
    shutil.rmtree(results / "aspo")  # delete a finished cell to rerun it from scratch
    assert FakeRunner(spec, cells[:1], results).run() == 0
    summary = json.loads((results / "aspo" / "summary.json").read_text())
    assert summary["attempts"] == 1 and summary["wall_s"] < 60
    assert json.loads(index_path.read_text())["cells"]["aspo"]["attempts"] == 1


def test_a_cell_run_with_another_config_is_refused_unless_wipe_changed(tmp_path):
    spec, cells, results = grid(tmp_path)
    run = results / "aspo"
    run.mkdir(parents=True)
    other = json.loads(json.dumps(cells[0].config))
    other["run"]["temperature"] = 0.5
    (run / "cell.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(GridError, match=r"aspo.*run\.temperature"):
        FakeRunner(spec, cells, results).run()
    runner = FakeRunner(spec, cells, results, wipe_changed=True)
    assert runner.run() == 0 and runner.launched == ["aspo", "grpo", "dapo"]


def test_progress_line_estimates_the_grid_from_finished_cells(tmp_path):
    spec, cells, results = grid(tmp_path)
    runner = FakeRunner(spec, cells, results)
    line = runner.progress_line(1, cells[0], results / "aspo", elapsed=30.0)
    assert "cell 1/3 aspo" in line and "step 0/2" in line and "grid ETA -" in line
    runner.index["cells"]["aspo"] = {"state": "done", "wall_s": 600.0}
    line = runner.progress_line(2, cells[1], results / "grpo", elapsed=120.0)
    # no live status: this cell ~600 - 120 s left, then one more cell of ~600 s
    assert "cell ETA 8.0 min" in line and "grid ETA 0.30 h" in line


def test_cli_dry_run_lists_cells_and_only_names_unknown_cells(tmp_path):
    import typer
    from typer.testing import CliRunner

    from orchestrator.experiments.cli import experiment_command

    app = typer.Typer()
    app.command()(experiment_command)
    grid_file = REPO / "configs" / "experiments" / "ci.yaml"
    out = CliRunner().invoke(app, ["--grid", str(grid_file), "--results", str(tmp_path), "--dry-run"])
    assert out.exit_code == 0 and "aspo-k1" in out.output and "pending" in out.output
    out = CliRunner().invoke(app, ["--grid", str(grid_file), "--results", str(tmp_path), "--only", "nope"])
    assert out.exit_code == 2 and "no such cell ['nope']" in out.output
    assert not (tmp_path / "grid.json").exists()


def test_two_invocations_on_one_results_folder_are_refused(tmp_path):
    import fcntl

    spec, cells, results = grid(tmp_path)
    results.mkdir()
    with open(results / ".grid.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        runner = FakeRunner(spec, cells, results)
        with pytest.raises(GridError, match="another `aspo experiment` is running"):
            runner.run()
        assert runner.launched == []


class HangingRunner(GridRunner):
    """The real launch path with a child that never finishes (stands in for a hung `aspo run`)."""

    def run_argv(self, run_dir):
        # like `aspo run`, it turns SIGINT into KeyboardInterrupt even if started with SIGINT ignored
        return [sys.executable, "-c", ("import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
                "while True: time.sleep(0.1)")]


def test_a_hung_run_is_stopped_at_the_cell_timeout_and_recorded(tmp_path):
    spec, cells, results = grid(tmp_path)
    spec = spec.model_copy(update={"cell_timeout_min": 0.1})  # 6 s: time for the child to start on a busy machine
    runner = HangingRunner(spec, cells[:1], results, console=Console(quiet=True))
    assert runner.run() == 1
    entry = json.loads((results / "grid.json").read_text())["cells"]["aspo"]
    assert entry["state"] == "failed" and entry["returncode"] == 124
    assert "KeyboardInterrupt" in (results / "aspo" / "experiment.log").read_text()  # stopped with Ctrl-C first


class InterruptedRunner(FakeRunner):
    """The grid is interrupted (Ctrl-C / SIGTERM) while the first cell's run is going."""

    def launch(self, i, cell, run_dir):
        time.sleep(0.2)
        raise KeyboardInterrupt


def test_an_interrupted_attempt_still_counts_its_wall_time(tmp_path):
    spec, cells, results = grid(tmp_path)
    assert InterruptedRunner(spec, cells[:1], results).run() == 130
    entry = json.loads((results / "grid.json").read_text())["cells"]["aspo"]
    assert entry["attempts"] == 1 and entry["wall_s"] >= 0.2
    write_trainer_rows(results / "aspo", [trainer_row(1, {"0": 8})])  # it got one step in: resumable
    assert FakeRunner(spec, cells[:1], results).run() == 0
    summary = json.loads((results / "aspo" / "summary.json").read_text())
    assert summary["attempts"] == 2 and summary["wall_s"] >= 0.2
