"""Helpers for the sandbox integration tests: a real SandboxPool driven from a private loop.

No pytest-asyncio here: one loop runs the pool, and `run(...)` drives one
request to completion. `assert_clean` checks a pool's process trees: each
worker must be back to exactly bwrap + its PID-namespace init + the fork
server, with nothing else in its cgroups and no zombie. (A module with a
unique name, not conftest: several test folders have a conftest.py.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sandbox.pool import SandboxPool, SandboxSettings
from sandbox.protocol import ExecutionLimits, RunRequest, RunResult

SECRET = "aspo-sandbox-secret-7c1d2e"


class PoolDriver:
    """A started pool plus the loop it lives on; `run` is synchronous for plain tests."""

    def __init__(self, **settings: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = SandboxPool(SandboxSettings(**settings))
        self.loop.run_until_complete(self.pool.start())

    def run(self, language: str = "python", code: str = "", stdin: bytes = b"",
            **limits: object) -> RunResult:
        req = RunRequest(language=language, code=code, stdin=stdin,
                         limits=ExecutionLimits(**limits))
        return self.loop.run_until_complete(self.pool.run(req))

    def gather(self, requests: list[RunRequest]) -> list[RunResult]:
        async def all_of() -> list[RunResult]:
            return await asyncio.gather(*(self.pool.run(r) for r in requests))
        return self.loop.run_until_complete(all_of())

    def settle(self) -> None:
        """Let background worker replacements finish."""
        async def wait() -> None:
            for _ in range(500):
                if not self.pool._background:
                    return
                await asyncio.sleep(0.01)
        self.loop.run_until_complete(wait())

    def worker_trees(self) -> list[list[int]]:
        return [w.process_ids() for w in self.pool._workers if w is not None]

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def find_marker(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (host-wide scan of /proc)."""
    hits = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    hits.append(int(name))
            except OSError:
                pass
    return hits


def assert_clean(driver: PoolDriver) -> None:
    """Every worker is exactly bwrap + init + server; no zombie; cgroups empty."""
    driver.settle()
    trees = driver.worker_trees()
    assert len(trees) == len(driver.pool._workers), "a worker slot is empty"
    for tree in trees:
        assert len(tree) == 3, f"leftover processes in a worker tree: {tree}"
        assert all(proc_state(p) not in ("Z", "gone") for p in tree), tree
    for w in driver.pool._workers:
        assert w is not None and driver.pool._cgroups.pids_in(w.cgroup_dirs) <= {w.server_pid}
