"""Request and result models of the sandbox library.

Results, not exceptions, for expected outcomes of untrusted work: a program
that times out, runs out of memory or floods its output returns a
`ProcessResult` saying so. Exceptions are for faults of the sandbox itself.
"""

from __future__ import annotations

import posixpath
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Language = Literal["python", "cpp"]
SUPPORTED_LANGUAGES: tuple[str, ...] = ("python", "cpp")


class ExecutionLimits(BaseModel):
    """Per-run resource limits. Every field is enforced by the sandbox."""

    model_config = ConfigDict(frozen=True)

    wall_timeout_s: float = Field(10.0, gt=0, le=600, description="Wall-clock limit; the whole process tree is killed when it passes.")
    cpu_time_s: float | None = Field(None, gt=0, le=600, description="CPU-time limit (RLIMIT_CPU); None = wall_timeout_s rounded up.")
    memory_mb: int = Field(512, ge=16, le=65536, description="Memory limit for the run's processes together (cgroup) and each process's address space.")
    max_processes: int = Field(64, ge=1, le=4096, description="Processes/threads the run may have at once (pids cgroup, or an unprivileged uid's RLIMIT_NPROC).")
    max_file_size_mb: int = Field(64, ge=1, le=4096, description="Largest file a process may write (RLIMIT_FSIZE).")
    max_open_files: int = Field(256, ge=16, le=65536, description="Open file descriptors per process (RLIMIT_NOFILE).")
    max_output_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="Bytes kept of stdout and of stderr each; the rest is read and discarded, and `truncated` set.")
    workdir_size_mb: int = Field(128, ge=1, le=16384, description="Size of the private tmpfs work dir.")


class ProcessStatus(str, Enum):
    ok = "ok"                            # exited with status 0
    nonzero_exit = "nonzero_exit"        # exited with status != 0
    signaled = "signaled"                # killed by a signal it did not ask for (e.g. SIGSEGV)
    timeout = "timeout"                  # wall-clock or CPU limit reached
    memory_exceeded = "memory_exceeded"  # memory limit reached
    sandbox_error = "sandbox_error"      # the sandbox failed, not the program


class ProcessResult(BaseModel):
    """Outcome of one process (a compile step or a run)."""

    status: ProcessStatus
    return_code: int | None = Field(None, description="Exit status, or -signal when killed by a signal; None when it never ran.")
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    execution_time_s: float = 0.0
    timed_out: bool = False
    memory_exceeded: bool = False
    message: str = ""

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated


class RunRequest(BaseModel):
    """One program to run. For C++ the source is compiled first (g++), then run."""

    language: Language
    code: str
    stdin: bytes = b""
    files: dict[str, bytes] = Field(default_factory=dict, description="Relative path -> content, written into the work dir before the run.")
    limits: ExecutionLimits = Field(default_factory=ExecutionLimits)
    compile_timeout_s: float = Field(30.0, gt=0, le=600)

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, bytes]) -> dict[str, bytes]:
        """File names must stay inside the work dir: relative, normalised, no `..`."""
        for name in files:
            norm = posixpath.normpath(name) if name else ""
            if not name or name.startswith("/") or norm != name or norm.split("/")[0] == ".." \
                    or "\0" in name:
                raise ValueError(f"files: {name!r} must be a relative path inside the work dir "
                                 "(no leading '/', no '..', normalised)")
        return files

    @model_validator(mode="after")
    def _fits_work_dir(self) -> RunRequest:
        """The program and its files must fit the work dir tmpfs they are written to."""
        total = len(self.code.encode()) + sum(len(v) for v in self.files.values())
        if total > self.limits.workdir_size_mb << 20:
            raise ValueError(f"code + files are {total} bytes: more than limits.workdir_size_mb="
                             f"{self.limits.workdir_size_mb} MiB")
        return self


class RunResult(BaseModel):
    compile: ProcessResult | None = Field(None, description="The compile step (C++ only).")
    run: ProcessResult | None = Field(None, description="The run; None when compilation failed.")
