"""Experiment grids and their report (issue #7): `aspo experiment` and `aspo report`.

- `grid`: the grid file (pydantic): a base run config, axes, a shared sample
  budget and a shared held-out set; expands to named cells and writes each
  cell's run config.
- `results`: what a cell directory holds (finished, resumable, inconsistent),
  condensing a finished run into `metrics.jsonl` + `summary.json`, deleting
  large artifacts, the `grid.json` index.
- `runner`: runs the cells one after another, each a full `aspo run`
  subprocess, with a rich progress line read from the run's dashboard.
- `report` / `plots`: the markdown report and its matplotlib figures, built
  only from the stored small result files (no run needed).

It talks to the rest of the system only through `aspo run` (a subprocess)
and the files a run leaves (`orchestrator/steps.jsonl`, `status.json`,
`trainer/steps.jsonl`, `orchestrator/dashboard.json`).
"""
