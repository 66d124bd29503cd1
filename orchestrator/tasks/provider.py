"""Random access to a task source's train or eval split, by task index.

The orchestrator's cursor is a task index, so resuming a run is "continue
from index i" for every source. File and HumanEval sources cycle (epochs);
the index keeps growing, so group and rollout ids stay unique.
"""

from __future__ import annotations

import hashlib

from orchestrator.settings import ArithmeticTasks, FileTasks, HumanEvalTasks
from orchestrator.tasks.arithmetic import arithmetic_task
from orchestrator.tasks.base import Task


def held_out_split(tasks: list[Task], split: str, eval_fraction: float) -> list[Task]:
    """A fixed split by a hash of the task id: the same on every machine and every run."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train', 'eval' or 'all', got {split!r}")

    def bucket(task: Task) -> float:
        return int(hashlib.sha256(task.task_id.encode()).hexdigest()[:8], 16) / 0x1_0000_0000

    return [t for t in tasks if (bucket(t) < eval_fraction) == (split == "eval")]


class TaskProvider:
    def __init__(self, source: ArithmeticTasks | FileTasks | HumanEvalTasks, split: str) -> None:
        self.source, self.split = source, split
        self._tasks: list[Task] | None = None
        if isinstance(source, FileTasks):
            from orchestrator.tasks.files import load_file_tasks

            tasks = load_file_tasks(source.path, source.default_kind, source.shuffle_seed)
            self._tasks = tasks if split == "all" else held_out_split(tasks, split, source.eval_fraction)
            if not self._tasks:
                raise ValueError(f"{source.path}: the {split} split is empty (eval_fraction={source.eval_fraction})")
        elif isinstance(source, HumanEvalTasks):
            from orchestrator.tasks.humaneval import humaneval_tasks

            tasks = humaneval_tasks()
            self._tasks = tasks if split == "all" else held_out_split(tasks, split, source.eval_fraction)

    def __len__(self) -> int:
        """Distinct tasks (a procedural source is effectively unbounded)."""
        return len(self._tasks) if self._tasks is not None else 1 << 62

    def get(self, index: int) -> Task:
        if self._tasks is None:
            src = self.source
            assert isinstance(src, ArithmeticTasks)
            return arithmetic_task("train" if self.split == "train" else "eval", src.seed, src.levels, index)
        return self._tasks[index % len(self._tasks)]
