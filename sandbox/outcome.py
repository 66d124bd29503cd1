"""From what a worker reported to a `ProcessResult`: the status rules in one place.

Used by `sandbox.pool.SandboxPool`. Precedence: a sandbox failure; output
past the cap that got the run killed (status `signaled`, `truncated` set,
never a timeout); memory (a cgroup OOM kill, or an allocation failure the
program reported: MemoryError / std::bad_alloc); time (wall deadline, or CPU
limit: SIGXCPU, or SIGKILL at the hard CPU limit); then the exit status.
"""

from __future__ import annotations

import re
import signal

from sandbox.protocol import ProcessResult, ProcessStatus
from sandbox.worker import RawOutcome

# An allocation failure the program itself reported (RLIMIT_AS, or a request
# larger than memory): only looked at when the program failed.
_ALLOC_FAILURE = re.compile(rb"\bMemoryError\b|std::bad_alloc|Cannot allocate memory")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def to_process_result(raw: RawOutcome, cpu_limit_s: float, what: str = "run") -> ProcessResult:
    """Map one raw outcome (compile or run) to the public result model."""
    base = {"stdout": _decode(raw.stdout), "stderr": _decode(raw.stderr),
            "stdout_truncated": raw.stdout_truncated, "stderr_truncated": raw.stderr_truncated}
    rep = raw.report
    if rep is None:
        return ProcessResult(status=ProcessStatus.sandbox_error, message=raw.error, **base)
    exit_code, sig = rep.get("exit_code"), rep.get("signal")
    return_code = exit_code if exit_code is not None else (-sig if sig else None)
    elapsed = float(rep.get("elapsed_s", 0.0))
    common = {"return_code": return_code, "execution_time_s": elapsed, **base}
    failed = exit_code != 0
    cpu_hit = sig == signal.SIGXCPU or (sig == signal.SIGKILL and rep.get("cpu_s", 0.0) >= cpu_limit_s)
    oom = rep.get("oom_kills", 0) > 0 or (
        failed and sig in (None, signal.SIGABRT) and _ALLOC_FAILURE.search(raw.stderr[-4096:]))
    if raw.output_killed and rep.get("killed_by_host") and not rep.get("timed_out"):
        stream = "stdout" if raw.stdout_truncated else "stderr"
        return ProcessResult(status=ProcessStatus.signaled, message=(
            f"{what} killed: {stream} passed max_output_bytes"), **common)
    if oom:
        return ProcessResult(status=ProcessStatus.memory_exceeded, memory_exceeded=True,
                             message=f"{what} exceeded its memory limit", **common)
    if rep.get("timed_out") or cpu_hit:
        which = "wall-clock" if rep.get("timed_out") else "CPU-time"
        return ProcessResult(status=ProcessStatus.timeout, timed_out=True,
                             message=f"{what} exceeded its {which} limit", **common)
    if exit_code == 0:
        return ProcessResult(status=ProcessStatus.ok, **common)
    if exit_code is not None:
        return ProcessResult(status=ProcessStatus.nonzero_exit, **common)
    name = signal.Signals(sig).name if sig else "unknown signal"
    return ProcessResult(status=ProcessStatus.signaled, message=f"{what} killed by {name}", **common)
