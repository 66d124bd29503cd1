"""Crash-safe bookkeeping of the loop: dataset cursor, in-flight work, counters.

Written atomically (temp file + fsync + rename) before a group is published
and each time a group leaves generation. After a crash, tasks that were in
flight are generated again (same deterministic group and rollout ids). A group
caught between "publishing" and "published" is looked up on the bus (still in
the rollout stream, or its rollout ids in the trained ledger) and counted
once: nothing is lost, nothing is trained twice, and the accepted count that
admission control relies on stays exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field


class Bookkeeping(BaseModel):
    next_task_index: int = Field(0, description="Tasks claimed so far (the cursor).")
    in_flight: list[int] = Field(default_factory=list, description="Claimed task indices not yet published or filtered.")
    retry_queue: list[int] = Field(default_factory=list, description="Task indices to generate again first (were in flight at a crash).")
    publishing: list[int] = Field(default_factory=list, description="Task indices whose group was being published: after a crash, check the bus before generating them again.")
    accepted_samples: int = 0
    accepted_groups: int = 0
    samples_generated: int = 0
    samples_filtered: int = 0
    reward_failures: int = 0
    evaluated_steps: list[int] = Field(default_factory=list)

    def claim(self) -> int:
        index = self.retry_queue.pop(0) if self.retry_queue else self.next_task_index
        if index == self.next_task_index:
            self.next_task_index += 1
        self.in_flight.append(index)
        return index

    def release(self, index: int) -> None:
        self.in_flight.remove(index)

    def after_restart(self) -> None:
        """In-flight work of a dead process is generated again, before new tasks
        (except groups caught mid-publish: `unsettled` lists them for a check)."""
        self.retry_queue = sorted((set(self.retry_queue) | set(self.in_flight)) - set(self.publishing))
        self.in_flight = []

    def settle(self, index: int, published: bool, group_size: int) -> None:
        """After a restart: a group caught mid-publish either reached the bus or is redone."""
        self.publishing.remove(index)
        if published:
            self.accepted_groups += 1
            self.accepted_samples += group_size
        else:
            self.retry_queue = sorted(set(self.retry_queue) | {index})


def load_bookkeeping(path: Path) -> Bookkeeping:
    if not path.exists():
        return Bookkeeping()
    book = Bookkeeping.model_validate_json(path.read_text())
    book.after_restart()
    return book


def save_bookkeeping(book: Bookkeeping, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(book.model_dump()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
