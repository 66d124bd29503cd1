"""Settings of the sandbox library: one pydantic-settings model, env prefix ``ASPO_SANDBOX_``.

Read by `sandbox.pool.SandboxPool`; the reward service loads it with
`aspo.settings.load_settings(SandboxSettings, yaml, section="sandbox")`.
Every default lives here and only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PREIMPORTS: tuple[str, ...] = (
    "abc", "array", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math",
    "operator", "random", "re", "statistics", "string", "textwrap", "threading", "time",
    "traceback", "typing", "unittest",
)


def _default_workers() -> int:
    return 2 * (os.cpu_count() or 1)


class SandboxSettings(BaseSettings):
    """How the warm sandbox pool is built. Per-run limits are in `ExecutionLimits` instead."""

    model_config = SettingsConfigDict(env_prefix="ASPO_SANDBOX_", frozen=True, extra="forbid")

    workers: int = Field(default_factory=_default_workers, ge=1, le=512,
                         description="Warm fork-server workers; each runs one program at a time.")
    insecure_no_sandbox: bool = Field(
        False, description="Run WITHOUT bubblewrap (no namespaces). Only for machines where "
        "bubblewrap cannot run and the code is trusted; rlimits and cgroups still apply.")
    bwrap_path: str = Field("bwrap", min_length=1, description="bubblewrap executable (name or path).")
    python_executable: str = Field("/usr/bin/python3", min_length=1,
                                   description="Interpreter for the fork servers and Python runs. "
                                   "Debian's, not the service's venv/pyenv one: it must live under "
                                   "/usr, the only tree the sandbox shows.")
    cxx: str = Field("g++", min_length=1, description="C++ compiler (name or path under /usr).")
    cxx_flags: tuple[str, ...] = Field(("-O2", "-std=c++17", "-pipe"),
                                       description="Flags for every C++ compile (part of the cache key).")
    compile_cache_size: int = Field(512, ge=1, le=1_000_000,
                                    description="Compiled binaries kept (LRU, on disk).")
    compile_cache_dir: Path | None = Field(
        None, description="Host dir for cached binaries (bound read-only into workers); "
        "None: a private temporary dir removed at close().")
    compile_memory_mb: int = Field(2048, ge=64, le=65536, description="Memory limit of a compile.")
    compile_max_processes: int = Field(32, ge=4, le=4096, description="Process limit of a compile.")
    run_uid_base: int = Field(61000, ge=1000, le=2**31 - (1 << 17),
                              description="Each worker runs programs as its own unprivileged uid/gid, "
                              "the lowest free one at or above this (claimed with a lock file, so "
                              "live pools on one host never share one): it owns no host files, "
                              "RLIMIT_NPROC counts per run, and a program cannot signal its fork server.")
    uid_lock_dir: Path = Field(Path("/run/lock/aspo-sandbox"),
                               description="Where run uids are claimed (flock'd files; host-wide).")
    rlimit_as_with_cgroup: bool = Field(
        False, description="Also cap each process's address space (RLIMIT_AS = memory_mb) when a "
        "memory cgroup is in force. Off: the cgroup limits real memory, while an address-space cap "
        "fails threads (glibc sizes their stacks from RLIMIT_STACK), JITs and sanitizers. Without "
        "a memory cgroup RLIMIT_AS = memory_mb is always set: it is then the memory limit.")
    stack_mb: int = Field(256, ge=8, le=65536,
                          description="RLIMIT_STACK of a run (deep recursion in C++), capped at memory_mb.")
    cgroup_mode: Literal["auto", "v1", "v2", "none"] = Field(
        "auto", description="Which cgroup hierarchy to use for memory and pids limits.")
    preimport_modules: tuple[str, ...] = Field(
        DEFAULT_PREIMPORTS, description="Stdlib modules each fork server imports before forking runs.")
    acquire_timeout_s: float = Field(600.0, gt=0, le=86400,
                                     description="Longest wait for a free worker before a run gets "
                                     "a sandbox_error result.")
    worker_start_timeout_s: float = Field(30.0, gt=0, le=600,
                                          description="Longest wait for a new fork server to be ready.")
    hang_grace_s: float = Field(5.0, gt=0, le=600,
                                description="Extra time past a run's wall limit before its worker "
                                "counts as hung and is replaced.")
    output_kill: bool = Field(True, description="Kill a run as soon as stdout or stderr passes "
                              "max_output_bytes (so endless output ends at once, not at the timeout).")
