"""The grid file: a base run config, axes, one sample budget, one held-out set.

A grid (YAML) looks like::

    name: study
    base: ../default.yaml          # a run config, relative to this file (or inline)
    axes:                          # every combination is one cell, one `aspo run`
      loss: [aspo, grpo, dapo, no_is]
      max_off_policy_steps: [0, 1, 2, 4]
      ppo_epochs: [1]
      seed: [0]
    budget: {total_steps: 24, group_size: 8, groups_per_step: 4, max_tokens: 48}
    held_out: {seed: 0, every_steps: 6, num_prompts: 32, k: 4}
    overrides: {}                  # deep-merged into every cell's config

Fairness between cells, which the comparison rests on:

- Same sample budget: `budget` fixes total_steps x groups_per_step x group_size
  rollout samples of at most max_tokens tokens; budget keys cannot be axes.
  `ppo_epochs` reuses the same samples for more optimizer passes (the paper's
  off-policy source), so it changes compute, not the samples drawn.
- Same held-out set: for the arithmetic task every cell evaluates on the eval
  stream of `held_out.seed` (`orchestrator.eval_tasks`), whatever its own seed;
  file and HumanEval sources split by a hash of the task id, the same for every
  seed. The training stream follows the cell's `seed` unless the base pins
  `orchestrator.tasks.seed`.

Cells are ordered with the `seed` axis outermost, so a study cut short holds
complete sweeps of the first seeds rather than every setting of one loss.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aspo.settings import SettingsError, format_validation_error, read_yaml
from orchestrator.runconfig import RunConfig, RunSection, check_stream_capacity

# Axes that live in the trainer section rather than `run:`.
TRAINER_AXES: dict[str, tuple[str, ...]] = {
    "ppo_epochs": ("trainer", "batching", "ppo_epochs"),
    "mini_batches": ("trainer", "batching", "mini_batches"),
}
BUDGET_KEYS = ("total_steps", "group_size", "groups_per_step", "max_tokens")
NOT_AXES = {"run_dir", "loss_hparams", *BUDGET_KEYS}
# Short prefixes in cell names; other axes use their full key.
NAME_PREFIX = {"loss": "", "max_off_policy_steps": "k", "ppo_epochs": "ep", "seed": "s", "mini_batches": "mb"}
Scalar = str | int | float | bool


class GridError(SettingsError):
    """A grid file or results folder that cannot be used as is; the message says why."""


class Budget(BaseModel):
    """The sample budget every cell shares (unset keys keep the base config's value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total_steps: int | None = Field(None, ge=1, description="Trainer steps of every run.")
    group_size: int | None = Field(None, ge=2, description="Samples per prompt.")
    groups_per_step: int | None = Field(None, ge=1, description="Groups per trainer step.")
    max_tokens: int | None = Field(None, ge=1, description="Completion tokens per sample.")


class HeldOut(BaseModel):
    """The held-out evaluation every cell shares (unset keys keep the base's `orchestrator.evaluation`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Task seed of the arithmetic eval stream, the same for every cell.")
    every_steps: int | None = Field(None, ge=0, description="Evaluate every m trainer steps (and at the end).")
    num_prompts: int | None = Field(None, ge=1, description="Held-out prompts per evaluation.")
    k: int | None = Field(None, ge=1, description="Samples per prompt (avg@k, pass@k).")
    temperature: float | None = Field(None, gt=0, description="Evaluation sampling temperature.")


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="Grid name; default results folder results/<name>.")
    base: Path | dict[str, Any] = Field(description="Base run config: a path (relative to the grid file) or inline.")
    axes: dict[str, list[Scalar]] = Field(min_length=1, description="run-section keys (or ppo_epochs, mini_batches) -> values.")
    budget: Budget = Field(default_factory=Budget)
    held_out: HeldOut = Field(default_factory=HeldOut)
    overrides: dict[str, Any] = Field(default_factory=dict, description="Deep-merged into every cell's run config.")
    cell_timeout_min: float | None = Field(None, gt=0, description="Stop a cell's run after this many minutes "
                                           "(recorded as failed; the next invocation resumes it). None = no limit.")

    @field_validator("axes")
    @classmethod
    def _known_axes(cls, axes: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        allowed = (set(RunSection.model_fields) - NOT_AXES) | set(TRAINER_AXES)
        for key, values in axes.items():
            if key in BUDGET_KEYS:
                raise ValueError(f"axis `{key}` is part of the sample budget, which every cell shares: set it under `budget:`")
            if key not in allowed:
                raise ValueError(f"unknown axis `{key}`; known axes: {', '.join(sorted(allowed))}")
            if not values:
                raise ValueError(f"axis `{key}` has no values")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"axis `{key}` repeats a value: {values}")
        return axes

    @model_validator(mode="after")
    def _budget_not_in_overrides(self) -> GridSpec:
        run = self.overrides.get("run", {}) or {}
        clash = sorted((set(run) & set(BUDGET_KEYS)) | (set(run) & {"run_dir"}) | (set(run) & set(self.axes)))
        if clash:
            raise ValueError(f"overrides.run sets {clash}: budget keys go under `budget:`, axes under `axes:`, "
                             "and run_dir is chosen per cell")
        return self


class Cell(BaseModel):
    """One run of the grid: its name, its axis values and its full run config."""

    model_config = ConfigDict(frozen=True)

    name: str
    values: dict[str, Scalar]
    config: dict[str, Any]


def load_grid(path: str | Path) -> tuple[GridSpec, dict[str, Any]]:
    """Parse and validate a grid file; returns the spec and the resolved base config."""
    path = Path(path)
    data = read_yaml(path)
    try:
        spec = GridSpec.model_validate(data)
    except ValidationError as err:
        raise GridError(format_validation_error(err, str(path))) from None
    if isinstance(spec.base, dict):
        base = copy.deepcopy(spec.base)
    else:
        base_path = spec.base if spec.base.is_absolute() else path.parent / spec.base
        if not base_path.is_file():
            raise GridError(f"{path}: `base` {spec.base} not found (looked for {base_path}; paths are relative to the grid file)")
        base = read_yaml(base_path)
    return spec, base


def cell_name(values: dict[str, Scalar]) -> str:
    parts = [f"{NAME_PREFIX.get(k, k)}{_fmt(v)}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


def _fmt(value: Scalar) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return format(value, "g") if isinstance(value, float) else str(value)


def combinations(axes: dict[str, list[Scalar]]) -> list[dict[str, Scalar]]:
    """Every combination of the axes in run order (seed outermost); keys in the file's axis order."""
    keys = sorted(axes, key=lambda k: k != "seed")
    ordered = (dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys)))
    return [{k: o[k] for k in axes} for o in ordered]


def expand(spec: GridSpec, base: dict[str, Any], results: Path) -> list[Cell]:
    """Every combination of the axes, seed outermost; each validated as a run config."""
    cells: list[Cell] = []
    for values in combinations(spec.axes):
        name = cell_name(values)
        cells.append(Cell(name=name, values=values, config=cell_config(spec, base, values, results / name)))
    names = [c.name for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GridError(f"axis values give the same cell name twice: {dupes}; make the values distinct after "
                        "replacing characters outside [A-Za-z0-9._-]")
    return cells


def cell_config(spec: GridSpec, base: dict[str, Any], values: dict[str, Scalar], run_dir: Path) -> dict[str, Any]:
    """The base config with the overrides, the budget, the held-out set and this cell's values."""
    cfg = _deep_merge(copy.deepcopy(base), spec.overrides)
    run = cfg.setdefault("run", {})
    run.update(spec.budget.model_dump(exclude_none=True))
    for key, value in values.items():
        if key in TRAINER_AXES:
            _set_path(cfg, TRAINER_AXES[key], value)
        else:
            run[key] = value
    run["run_dir"] = str(run_dir)
    orch = cfg.setdefault("orchestrator", {})
    orch.setdefault("dashboard", {}).setdefault("port", 0)  # cells never fight over the dashboard port
    held = spec.held_out.model_dump(exclude_none=True, exclude={"seed"})
    orch["evaluation"] = {**(orch.get("evaluation") or {}), **held}
    tasks = dict(orch.get("tasks") or {"type": "arithmetic"})
    if tasks.get("type") == "arithmetic":
        tasks.setdefault("seed", run.get("seed", RunSection.model_fields["seed"].default))
        orch["tasks"] = tasks
        if "eval_tasks" not in orch:
            orch["eval_tasks"] = {**{k: v for k, v in tasks.items() if k != "seed"}, "seed": spec.held_out.seed}
    check_cell(cfg, cell_name(values))
    return cfg


def check_cell(cfg: dict[str, Any], name: str) -> None:
    """Build every component's settings as `aspo run` will, so a bad cell fails before the
    grid starts rather than hours in (the model dir and ports are placeholders)."""
    try:
        run = RunConfig.model_validate(cfg)
    except ValidationError as err:
        raise GridError(format_validation_error(err, f"cell {name}")) from None
    try:
        trainer = run.trainer_settings("model", "cpu", 1)
        run.inference_settings("model", "cpu", 1)
        run.reward_settings(1)
        orch = run.orchestrator_settings("model", ["http://127.0.0.1:1"], "http://127.0.0.1:1")
        check_stream_capacity(trainer, orch, run.bus_settings("redis://127.0.0.1:1"))
    except SettingsError as err:
        raise GridError(f"cell {name}: {err}") from None


def _set_path(cfg: dict[str, Any], path: tuple[str, ...], value: Scalar) -> None:
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into
