"""Run a grid's cells one after another, each a full `aspo run` subprocess.

Resumable from files alone (see `results` for the cell states): `done` cells
are skipped, `finished` ones only condensed, `partial` ones rerun on the same
run dir (the launcher resumes trainer, orchestrator and Redis from there),
`inconsistent` ones wiped and rerun. A cell whose stored `cell.yaml` differs
from what the grid now generates is refused (its data came from another
config) unless `wipe_changed` is set. A failed cell is recorded in
`grid.json` with its log tail and the grid moves on; running the grid again
retries it. Ctrl-C (or SIGTERM) stops the current `aspo run` cleanly (it
checkpoints) and the next invocation resumes that cell.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from aspo.signals import interrupt_on_signals
from orchestrator.experiments import results as res
from orchestrator.experiments.grid import Cell, GridError, GridSpec

STOP_GRACE_S = 600.0  # the trainer may be mid-step when asked to stop; let it checkpoint


def stored_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "cell.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (run.run_dir ignored: results folders may move)."""
    out = []
    for key in sorted(set(old) | set(new)):
        where = f"{prefix}{key}"
        if where == "run.run_dir":
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{where}.")
        elif a != b:
            out.append(where)
    return out


def plan(cells: list[Cell], results: Path) -> list[tuple[Cell, res.CellState, str]]:
    """Each cell with its current state and reason, in run order."""
    return [(c, *res.cell_state(results / c.name, int(c.config["run"]["total_steps"]))) for c in cells]


class GridRunner:
    def __init__(self, spec: GridSpec, cells: list[Cell], results: Path, *, keep_artifacts: bool = False,
                 wipe_changed: bool = False, console=None, grid_file: Path | None = None) -> None:
        from rich.console import Console

        self.spec, self.cells, self.results, self.grid_file = spec, cells, results, grid_file
        self.keep_artifacts, self.wipe_changed = keep_artifacts, wipe_changed
        self.console = console or Console()
        self.index = self._load_index()

    # ---------------------------------------------------------------- index
    def _load_index(self) -> dict[str, Any]:
        path = self.results / "grid.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        grid_file = self.grid_file.as_posix() if self.grid_file else old.get("grid_file")
        return {"name": self.spec.name, "grid_file": grid_file, "spec": self.spec.model_dump(mode="json"),
                "cells": old.get("cells", {})}

    def record(self, cell: Cell, **fields: Any) -> None:
        entry = self.index["cells"].setdefault(cell.name, {"axes": cell.values, "wall_s": 0.0, "attempts": 0})
        entry.update(fields, updated_at=time.time())
        self.index["order"] = [c.name for c in self.cells]
        res.write_json(self.results / "grid.json", self.index)

    # ---------------------------------------------------------------- run
    def check_configs(self) -> None:
        """Refuse (or wipe, when asked) cells whose stored config is not the one the grid generates."""
        for cell in self.cells:
            run_dir = self.results / cell.name
            old = stored_config(run_dir)
            changes = config_changes(old, cell.config) if old is not None else []
            if changes and not self.wipe_changed:
                raise GridError(f"cell {cell.name}: {run_dir}/cell.yaml differs from the grid in {changes[:6]}; "
                                "its results came from another config. Use another --results folder, or "
                                "--wipe-changed to delete and rerun such cells")
            if changes:
                self.console.print(f"[yellow]{cell.name}: config changed ({changes[:6]}): wiping {run_dir}")
                shutil.rmtree(run_dir)

    def run(self) -> int:
        """Run every cell not yet done; 0 when all are done, 1 when some failed, 130 when interrupted.

        One invocation per results folder at a time (an flock on `<results>/.grid.lock`):
        two would run the same cell on the same run dir."""
        self.results.mkdir(parents=True, exist_ok=True)
        with open(self.results / ".grid.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise GridError(f"another `aspo experiment` is running on {self.results}") from None
            return self._run_locked()

    def _run_locked(self) -> int:
        self.check_configs()
        failed: list[str] = []
        with interrupt_on_signals() as received:  # Ctrl-C or SIGTERM, also when started with `nohup ... &`
            try:
                for i, (cell, state, reason) in enumerate(plan(self.cells, self.results), 1):
                    if not self.run_cell(i, cell, state, reason):
                        failed.append(cell.name)
            except KeyboardInterrupt:
                self.console.print("[yellow]grid interrupted: the next `aspo experiment` resumes the current cell")
                return received.exit_code()
        done = sum(s == "done" for _, s, _ in plan(self.cells, self.results))
        self.console.print(f"[{'green' if not failed else 'red'}]grid {self.spec.name}: {done}/{len(self.cells)} "
                           f"cells done" + (f"; failed: {', '.join(failed)} (rerun to retry)" if failed else ""))
        return 1 if failed else 0

    def run_cell(self, i: int, cell: Cell, state: res.CellState, reason: str) -> bool:
        run_dir = self.results / cell.name
        n = len(self.cells)
        if state == "done":
            refreshed = res.refresh_summary(run_dir)
            self.console.print(f"[dim]cell {i}/{n} {cell.name}: done, skipped"
                               + (" (summary.json rewritten by the current summary version)" if refreshed else ""))
            self.record(cell, state="done")
            return True
        if state == "inconsistent":
            self.console.print(f"[yellow]cell {i}/{n} {cell.name}: {reason}: wiping and rerunning")
            shutil.rmtree(run_dir)
        entry = self.index["cells"].get(cell.name, {})
        wall, attempts = float(entry.get("wall_s", 0.0)), int(entry.get("attempts", 0))
        if state in ("pending", "inconsistent"):  # no folder (deleted to rerun) or wiped: its history is gone too
            wall, attempts = 0.0, 0
        if state != "finished":
            self.console.print(f"cell {i}/{n} {cell.name}: {reason}")
            t0 = time.monotonic()
            self.record(cell, state="running", attempts=attempts + 1)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "cell.yaml").write_text(yaml.safe_dump(cell.config, sort_keys=False))
            res.stash_series(run_dir)
            try:
                code = self.launch(i, cell, run_dir)
            finally:  # an interrupted attempt's time counts too: the next invocation resumes from it
                wall, attempts = wall + time.monotonic() - t0, attempts + 1
                self.record(cell, wall_s=wall)
            state, reason = res.cell_state(run_dir, int(cell.config["run"]["total_steps"]))
            if state != "finished":
                tail = res_log_tail(run_dir)
                self.record(cell, state="failed", returncode=code, reason=reason, log_tail=tail)
                self.console.print(f"[red]cell {cell.name} failed (exit {code}, {reason}); log tail:\n{tail}")
                return False
        summary = res.condense(run_dir, cell.name, cell.values, cell.config, wall, attempts)
        if not self.keep_artifacts:
            res.delete_artifacts(run_dir)
        fe = summary["final_eval"] or {}
        self.record(cell, state="done", final_eval=fe, returncode=0)
        self.console.print(f"[green]cell {i}/{n} {cell.name}: done in {wall / 60:.1f} min; final eval {fe}")
        return True

    def run_argv(self, run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "aspo", "run", "--config", str(run_dir / "cell.yaml")]

    def launch(self, i: int, cell: Cell, run_dir: Path) -> int:
        """`aspo run --config <run_dir>/cell.yaml` (written by the caller) with a live progress
        line; returns its exit status, 124 when it ran past `cell_timeout_min` (stopped cleanly,
        so the next invocation resumes it)."""
        from rich.live import Live

        env = dict(os.environ)
        env.pop("REDIS_URL", None)  # every cell gets its own private Redis in its run dir
        with open(run_dir / "experiment.log", "ab") as log:
            proc = subprocess.Popen(self.run_argv(run_dir), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        started = time.monotonic()
        limit = self.spec.cell_timeout_min * 60 if self.spec.cell_timeout_min else None
        try:
            with Live(console=self.console, refresh_per_second=1, transient=True) as live:
                while proc.poll() is None:
                    elapsed = time.monotonic() - started
                    if limit is not None and elapsed > limit:
                        self.console.print(f"[red]{cell.name} ran past {self.spec.cell_timeout_min} min: stopping it")
                        stop_child(proc)
                        return 124
                    live.update(self.progress_line(i, cell, run_dir, elapsed))
                    time.sleep(min(1.0, limit / 10) if limit else 1.0)
        except KeyboardInterrupt:
            self.console.print(f"[yellow]stopping {cell.name} (its `aspo run` checkpoints and stops)")
            stop_child(proc)
            raise
        return int(proc.returncode)

    def progress_line(self, i: int, cell: Cell, run_dir: Path, elapsed: float) -> str:
        status = dashboard_status(run_dir) or {}
        per_cell = [float(c.get("wall_s", 0)) for c in self.index["cells"].values() if c.get("state") == "done"]
        per_cell = [w for w in per_cell if w > 0]
        cell_eta = status.get("eta_s")
        if cell_eta is None and per_cell:
            cell_eta = max(sum(per_cell) / len(per_cell) - elapsed, 0.0)
        left = len(self.cells) - i
        grid_eta = (cell_eta + left * sum(per_cell) / len(per_cell)) if (cell_eta is not None and per_cell) else None
        step = f"step {status.get('trainer_step', 0)}/{status.get('total_steps', cell.config['run']['total_steps'])}"
        return " | ".join([
            f"cell {i}/{len(self.cells)} {cell.name}", f"{status.get('state', 'starting')}", step,
            f"{elapsed / 60:.1f} min", f"cell ETA {cell_eta / 60:.1f} min" if cell_eta is not None else "cell ETA -",
            f"grid ETA {grid_eta / 3600:.2f} h" if grid_eta is not None else "grid ETA -",
        ])


def stop_child(proc: subprocess.Popen) -> None:
    """Ctrl-C to the run's process group (the launcher stops every component cleanly), then kill."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def dashboard_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's live /api/status, or None while it is starting or stopping."""
    import httpx

    path = run_dir / "orchestrator" / "dashboard.json"
    try:
        url = json.loads(path.read_text())["url"]
        return httpx.get(f"{url}/api/status", timeout=2).json()
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return None


def res_log_tail(run_dir: Path, lines: int = 15) -> str:
    from orchestrator.launcher import log_tail

    return log_tail(run_dir / "experiment.log", lines)

