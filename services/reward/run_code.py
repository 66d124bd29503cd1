"""SandboxFusion-compatible `/run_code`: translate its request into a sandbox run and back.

Mapping (SandboxFusion semantics, as its server's `parse_run_status` does):
- run_result.status: Finished (exited, any status, also killed by a signal or the
  memory limit), TimeLimitExceeded (wall/CPU limit), Error (sandbox fault);
- status: SandboxError if any step is Error; Failed if any step timed out or
  exited non-zero; else Success.
Unlike SandboxFusion, output is read while the program runs, so large outputs
never turn into a false TimeLimitExceeded; the cap is reported in `message`.
"""

from __future__ import annotations

import base64
import binascii
import socket

from sandbox.protocol import ExecutionLimits, ProcessResult, ProcessStatus, RunRequest, RunResult
from services.reward.errors import RewardInputError, check_size, resolve_language
from services.reward.protocol import (
    CommandRunResult,
    CommandRunStatus,
    RunCodeRequest,
    RunCodeResponse,
    RunStatus,
)
from services.reward.settings import RewardSettings


def _decode_files(files: dict[str, str | None], limit: int) -> dict[str, bytes]:
    decoded: dict[str, bytes] = {}
    total = 0
    for path, content in files.items():
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise RewardInputError(422, f"files.{path}", "file paths must be relative and stay inside the work dir")
        try:
            data = base64.b64decode(content or "", validate=True)
        except (binascii.Error, ValueError):
            raise RewardInputError(422, f"files.{path}", "content is not valid base64") from None
        total += len(data)
        decoded[path] = data
    if total > limit:
        raise RewardInputError(413, "files", f"{total} bytes of files is over the limit of {limit} bytes")
    return decoded


def build_run_request(req: RunCodeRequest, settings: RewardSettings) -> RunRequest:
    """Validate limits and sizes and build the sandbox request (raises RewardInputError)."""
    language = resolve_language(req.language)
    check_size(req.code, settings.max_code_bytes, "code")
    stdin = (req.stdin or "").encode("utf-8", "surrogatepass")
    check_size(stdin, settings.max_stdin_bytes, "stdin")
    run_timeout = req.run_timeout or settings.run_code_default_timeout_s
    compile_timeout = req.compile_timeout or settings.code_compile_timeout_s
    for name, value in (("run_timeout", run_timeout), ("compile_timeout", compile_timeout)):
        if value > settings.run_code_max_timeout_s:
            raise RewardInputError(422, name, f"{value:g}s is over this service's limit of {settings.run_code_max_timeout_s:g}s")
    memory = settings.run_code_memory_mb if req.memory_limit_MB in (-1, 0) else req.memory_limit_MB
    if memory < 16:
        raise RewardInputError(422, "memory_limit_MB", "must be -1 (default) or at least 16")
    return RunRequest(
        language=language,
        code=req.code,
        stdin=stdin,
        files=_decode_files(req.files, settings.max_stdin_bytes),
        limits=ExecutionLimits(wall_timeout_s=run_timeout, memory_mb=memory),
        compile_timeout_s=compile_timeout,
    )


def command_result(result: ProcessResult) -> CommandRunResult:
    """One sandbox ProcessResult as a SandboxFusion CommandRunResult."""
    if result.status == ProcessStatus.timeout:
        status = CommandRunStatus.TimeLimitExceeded
    elif result.status == ProcessStatus.sandbox_error:
        status = CommandRunStatus.Error
    else:
        status = CommandRunStatus.Finished
    return_code = result.return_code
    if status == CommandRunStatus.Finished and return_code is None:
        return_code = 1  # killed without an exit status: never report it as success
    return CommandRunResult(
        status=status,
        execution_time=result.execution_time_s,
        return_code=return_code,
        stdout=result.stdout,
        stderr=result.stderr,
    )


def _notes(name: str, result: ProcessResult) -> list[str]:
    notes = []
    if result.memory_exceeded or result.status == ProcessStatus.memory_exceeded:
        notes.append(f"{name}: memory limit exceeded")
    if result.truncated:
        notes.append(f"{name}: output truncated")
    if result.status == ProcessStatus.sandbox_error and result.message:
        notes.append(f"{name}: {result.message}")
    return notes


def run_code_response(result: RunResult) -> RunCodeResponse:
    """Translate a sandbox RunResult; status follows SandboxFusion's parse_run_status."""
    steps = [(n, r) for n, r in (("compile", result.compile), ("run", result.run)) if r is not None]
    converted = {name: command_result(r) for name, r in steps}
    notes = [note for name, r in steps for note in _notes(name, r)]
    outcomes = [c.status for c in converted.values()]
    if CommandRunStatus.Error in outcomes:
        status = RunStatus.SandboxError
    elif CommandRunStatus.TimeLimitExceeded in outcomes or any(c.return_code != 0 for c in converted.values()):
        status = RunStatus.Failed
    elif not steps:
        status, notes = RunStatus.SandboxError, ["nothing ran"]
    else:
        status = RunStatus.Success
    return RunCodeResponse(
        status=status,
        message="; ".join(notes),
        compile_result=converted.get("compile"),
        run_result=converted.get("run"),
        executor_pod_name=socket.gethostname(),
        files={},
    )
