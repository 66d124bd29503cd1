"""Grid files: parsing, validation errors that name the field, cell naming, fair cell configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.experiments.grid import GridError, cell_name, expand, load_grid
from orchestrator.runconfig import RunConfig
from orchestrator.settings import ArithmeticTasks
from orchestrator.tasks.provider import TaskProvider

REPO = Path(__file__).resolve().parents[3]


def write_grid(tmp_path: Path, **fields) -> Path:
    doc = {"name": "g", "base": str(REPO / "configs" / "smoke.yaml"), "axes": {"loss": ["aspo", "grpo"]}}
    doc.update(fields)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_committed_grids_parse_with_one_budget_and_one_held_out_set(tmp_path):
    for name, n_cells in (("ci", 2), ("study", 32), ("epochs", 4)):
        spec, base = load_grid(REPO / "configs" / "experiments" / f"{name}.yaml")
        cells = expand(spec, base, tmp_path / name)
        assert len(cells) == n_cells
        assert len({c.name for c in cells}) == n_cells
        runs = [c.config["run"] for c in cells]
        budgets = {(r["total_steps"], r["group_size"], r["groups_per_step"], r["max_tokens"]) for r in runs}
        assert len(budgets) == 1, "every cell must share the sample budget"
        evals = {yaml.safe_dump(c.config["orchestrator"]["eval_tasks"]) for c in cells}
        assert len(evals) == 1 and len({yaml.safe_dump(c.config["orchestrator"]["evaluation"]) for c in cells}) == 1
        for c in cells:
            assert Path(c.config["run"]["run_dir"]) == tmp_path / name / c.name
            RunConfig.model_validate(c.config)


def test_the_epochs_supplement_differs_from_the_study_only_in_its_batching(tmp_path):
    study = {c.name: c.config for c in expand(*load_grid(REPO / "configs/experiments/study.yaml"), tmp_path / "s")}
    for cell in expand(*load_grid(REPO / "configs/experiments/epochs.yaml"), tmp_path / "e"):
        twin = study[cell.name.replace(f"-ep{cell.values['ppo_epochs']}", "")]
        assert cell.config["trainer"]["batching"]["ppo_epochs"] == cell.values["ppo_epochs"]
        assert cell.config["trainer"]["batching"]["mini_batches"] == 4
        for section in ("run", "orchestrator"):
            ours = {k: v for k, v in cell.config[section].items() if k not in ("run_dir", "run_id")}
            theirs = {k: v for k, v in twin[section].items() if k not in ("run_dir", "run_id")}
            assert ours == theirs, section
        assert cell.config["trainer"]["optimizer"] == twin["trainer"]["optimizer"]


def test_study_runs_every_setting_of_seed_0_before_seed_1(tmp_path):
    spec, base = load_grid(REPO / "configs" / "experiments" / "study.yaml")
    seeds = [c.values["seed"] for c in expand(spec, base, tmp_path)]
    assert seeds == [0] * 16 + [1] * 16


def test_seeds_share_the_held_out_prompts_but_not_the_training_stream(tmp_path):
    spec, base = load_grid(write_grid(tmp_path, axes={"seed": [0, 1]}, held_out={"seed": 7}))
    a, b = (c.config["orchestrator"] for c in expand(spec, base, tmp_path))
    eval_a = TaskProvider(ArithmeticTasks.model_validate(a["eval_tasks"]), "all")
    eval_b = TaskProvider(ArithmeticTasks.model_validate(b["eval_tasks"]), "all")
    assert [eval_a.get(i).messages for i in range(8)] == [eval_b.get(i).messages for i in range(8)]
    train_a = TaskProvider(ArithmeticTasks.model_validate(a["tasks"]), "train")
    train_b = TaskProvider(ArithmeticTasks.model_validate(b["tasks"]), "train")
    assert [train_a.get(i).messages for i in range(8)] != [train_b.get(i).messages for i in range(8)]


def test_ppo_epochs_axis_reaches_the_trainer_and_budget_overrides_base(tmp_path):
    spec, base = load_grid(write_grid(tmp_path, axes={"loss": ["dapo"], "ppo_epochs": [1, 3]},
                                      budget={"total_steps": 5, "max_tokens": 16}))
    cells = expand(spec, base, tmp_path)
    assert [c.name for c in cells] == ["dapo-ep1", "dapo-ep3"]
    trainer = RunConfig.model_validate(cells[1].config).trainer_settings("model", "cpu", 0)
    assert trainer.batching.ppo_epochs == 3 and trainer.max_steps == 5
    assert cells[1].config["run"]["max_tokens"] == 16
    assert cells[1].config["run"]["group_size"] == 4  # from smoke.yaml: unset budget keys keep the base


@pytest.mark.parametrize(("fields", "needle"), [
    ({"axes": {"total_steps": [1, 2]}}, "axis `total_steps` is part of the sample budget"),
    ({"axes": {"los": ["aspo"]}}, "unknown axis `los`"),
    ({"axes": {"loss": []}}, "axis `loss` has no values"),
    ({"axes": {"loss": ["aspo", "aspo"]}}, "repeats a value"),
    ({"budget": {"total_steps": 0}}, "budget.total_steps"),
    ({"held_out": {"k": 0}}, "held_out.k"),
    ({"overrides": {"run": {"total_steps": 3}}}, "budget keys go under `budget:`"),
    ({"axes": {"max_off_policy_steps": [-1]}}, "max_off_policy_steps"),
    ({"base": "nope.yaml"}, "`base` nope.yaml not found"),
    ({"name": "a b"}, "name"),
])
def test_bad_grid_is_refused_naming_the_problem(tmp_path, fields, needle):
    with pytest.raises(GridError) as err:
        spec, base = load_grid(write_grid(tmp_path, **fields))
        expand(spec, base, tmp_path)
    assert needle in str(err.value)


def test_base_path_is_relative_to_the_grid_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"run": {"loss": "grpo", "total_steps": 9}}))
    grid = tmp_path / "sub" / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": "../base.yaml", "axes": {"seed": [3]}}))
    spec, base = load_grid(grid)
    (cell,) = expand(spec, base, tmp_path / "out")
    assert cell.config["run"]["loss"] == "grpo" and cell.config["run"]["total_steps"] == 9
    assert cell.config["orchestrator"]["tasks"]["seed"] == 3


def test_cell_names_are_short_stable_and_safe():
    assert cell_name({"loss": "aspo", "max_off_policy_steps": 2, "ppo_epochs": 3, "seed": 1}) == "aspo-k2-ep3-s1"
    assert cell_name({"temperature": 0.7, "loss": "no_is"}) == "temperature0.7-no_is"
    assert cell_name({"model": "org/model name"}) == "modelorg_model_name"


def test_colliding_cell_names_are_refused(tmp_path):
    spec, base = load_grid(write_grid(tmp_path, axes={"model": ["a/b", "a b"]}))
    with pytest.raises(GridError, match="same cell name twice"):
        expand(spec, base, tmp_path)


def test_a_cell_that_aspo_run_would_refuse_fails_before_the_grid_starts(tmp_path):
    # k = 40 with checkpoints every 2 steps needs a rollout stream longer than smoke.yaml's bus allows
    spec, base = load_grid(write_grid(tmp_path, axes={"max_off_policy_steps": [1, 40]},
                                      overrides={"bus": {"max_len": 20}}))
    with pytest.raises(GridError, match=r"cell k40: bus.max_len=20 is too small"):
        expand(spec, base, tmp_path)
    spec, base = load_grid(write_grid(tmp_path, overrides={"trainer": {"batching": {"ppo_epochs": 0}}}))
    with pytest.raises(GridError, match=r"(?s)cell aspo: .*batching.ppo_epochs: Input should be greater"):
        expand(spec, base, tmp_path)
