"""SandboxFusion /run_code translation: request validation and status mapping."""

from __future__ import annotations

import base64

import pytest

from sandbox.protocol import ProcessResult, ProcessStatus, RunResult
from services.reward.errors import RewardInputError
from services.reward.protocol import RunCodeRequest
from services.reward.run_code import build_run_request, run_code_response
from services.reward.settings import RewardSettings

SETTINGS = RewardSettings()


def _proc(status: ProcessStatus, rc: int | None, **kw: object) -> ProcessResult:
    return ProcessResult(status=status, return_code=rc, **kw)


def test_aliases_defaults_and_files() -> None:
    req = RunCodeRequest(code="print(1)", language="python3", stdin="x", memory_limit_MB=-1,
                         files={"data/a.txt": base64.b64encode(b"hi").decode()}, fetch_files=["out.txt"])
    run = build_run_request(req, SETTINGS)
    assert run.language == "python" and run.stdin == b"x" and run.files == {"data/a.txt": b"hi"}
    assert run.limits.memory_mb == SETTINGS.run_code_memory_mb
    assert run.limits.wall_timeout_s == SETTINGS.run_code_default_timeout_s
    assert build_run_request(RunCodeRequest(code="", language="C++"), SETTINGS).language == "cpp"


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"language": "rust"}, 400, "language"),
        ({"code": "x" * (SETTINGS.max_code_bytes + 1)}, 413, "code"),
        ({"files": {"../etc/passwd": ""}}, 422, "files.../etc/passwd"),
        ({"files": {"a": "***not base64***"}}, 422, "files.a"),
        ({"run_timeout": 599}, 422, "run_timeout"),
    ],
)
def test_bad_requests_name_the_field(kwargs: dict, status: int, field: str) -> None:
    fields = {"code": "print(1)", "language": "python", **kwargs}
    with pytest.raises(RewardInputError) as info:
        build_run_request(RunCodeRequest(**fields), SETTINGS)
    assert info.value.status_code == status and info.value.field == field
    if status == 400:
        assert "python" in info.value.message and "cpp" in info.value.message


def test_status_mapping_follows_sandboxfusion() -> None:
    ok = run_code_response(RunResult(run=_proc(ProcessStatus.ok, 0, stdout="1\n")))
    assert ok.status == "Success" and ok.run_result.status == "Finished" and ok.run_result.stdout == "1\n"
    assert ok.compile_result is None and ok.files == {}
    bad = run_code_response(RunResult(run=_proc(ProcessStatus.nonzero_exit, 3)))
    assert bad.status == "Failed" and bad.run_result.status == "Finished" and bad.run_result.return_code == 3
    tle = run_code_response(RunResult(run=_proc(ProcessStatus.timeout, -9, timed_out=True)))
    assert tle.status == "Failed" and tle.run_result.status == "TimeLimitExceeded"
    oom = run_code_response(RunResult(run=_proc(ProcessStatus.memory_exceeded, None, memory_exceeded=True)))
    assert oom.status == "Failed" and oom.run_result.return_code != 0 and "memory" in oom.message
    err = run_code_response(RunResult(run=_proc(ProcessStatus.sandbox_error, None, message="bwrap died")))
    assert err.status == "SandboxError" and "bwrap died" in err.message
    cerr = run_code_response(RunResult(compile=_proc(ProcessStatus.nonzero_exit, 1, stderr="error: x"), run=None))
    assert cerr.status == "Failed" and cerr.run_result is None and cerr.compile_result.return_code == 1
