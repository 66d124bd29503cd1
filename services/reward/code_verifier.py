"""Code verification: run a program against LiveCodeBench / TACO tests in the sandbox.

Used by `serving.RewardService` for /v1/verify/code and code items of /v1/score.
The sandbox (`sandbox.pool.SandboxPool`) isolates and limits each run; this module
decides what to run (the program itself, or the call-based harness from
`code_checks`) and how to judge the result. C++ programs are compiled once per
source: the pool caches binaries by source hash, and the first test runs alone
so the others reuse its binary.

Modes: `all` (default) gives 1.0 only if every test passes and stops at the first
failure, in waves of `code_all_mode_wave` tests (the rest are "skipped");
`fraction` runs up to `code_test_concurrency` tests at once and gives passed/total.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox.protocol import ExecutionLimits, ProcessStatus, RunRequest, RunResult
from services.reward import code_checks
from services.reward.errors import RewardInputError, check_size, resolve_language
from services.reward.protocol import CodeVerifyRequest, CodeVerifyResponse, TestResult
from services.reward.settings import RewardSettings

_RUN_STATUS_TO_TEST = {
    ProcessStatus.timeout: "timeout",
    ProcessStatus.memory_exceeded: "memory_exceeded",
    ProcessStatus.sandbox_error: "sandbox_error",
    ProcessStatus.nonzero_exit: "runtime_error",
    ProcessStatus.signaled: "runtime_error",
}


class Runner(Protocol):
    async def run(self, request: RunRequest) -> RunResult: ...


@dataclass(frozen=True)
class PreparedTest:
    """One test, ready to run: the program, its stdin, and how to judge stdout."""

    index: int
    request: RunRequest
    expected: Any
    nonce: str | None  # the harness's result marker (call-based and append_code modes)
    mode: str  # "stdin" | "call" | "append"


def _program(req: CodeVerifyRequest) -> tuple[str | None, str]:
    """(code or None, language) from `code` or the completion's last fenced block."""
    if req.code is not None:
        return req.code, resolve_language(req.language or "python")
    code, tag = code_checks.extract_code(req.completion or "")
    return code, resolve_language(req.language or tag or "python")


def prepare_tests(req: CodeVerifyRequest, code: str, language: str, settings: RewardSettings) -> list[PreparedTest]:
    """Build one sandbox request per test; bad tests raise RewardInputError naming the field."""
    tests = req.tests
    if len(tests.inputs) > settings.max_tests:
        raise RewardInputError(413, "tests.inputs", f"{len(tests.inputs)} tests is over the limit of {settings.max_tests}")
    if tests.fn_name and language != "python":
        raise RewardInputError(400, "tests.fn_name", "call-based tests (fn_name) are supported for python only")
    if tests.append_code is not None and language != "python":
        raise RewardInputError(400, "tests.append_code", "append_code is supported for python only")
    check_size(code, settings.max_code_bytes, "code")
    check_size(tests.append_code or "", settings.max_code_bytes, "tests.append_code")
    mode = "call" if tests.fn_name else "append" if tests.append_code is not None else "stdin"
    limits = ExecutionLimits(
        wall_timeout_s=req.timeout_per_test or settings.code_timeout_per_test_s,
        memory_mb=req.memory_limit_mb or settings.code_memory_mb,
    )
    program = code_checks.call_harness(code, tests.fn_name) if tests.fn_name else code
    prepared = []
    for i, (given, expected) in enumerate(zip(tests.inputs, tests.outputs)):
        nonce = None
        if tests.fn_name:
            try:
                args = code_checks.decode_call_args(given)
            except ValueError as err:
                raise RewardInputError(422, f"tests.inputs.{i}", str(err)) from None
            nonce = code_checks.new_nonce()
            stdin = code_checks.call_stdin(nonce, args)
            expected = code_checks.decode_expected_value(expected)
        else:
            stdin = code_checks.stdin_text(given).encode("utf-8", "surrogatepass")
            expected = code_checks.expected_stdout(expected)
            if mode == "append":
                nonce = code_checks.new_nonce()
                program = code_checks.append_harness(code, tests.append_code or "", nonce)
        check_size(stdin, settings.max_stdin_bytes, f"tests.inputs.{i}")
        request = RunRequest(
            language=language, code=program, stdin=stdin, limits=limits,
            compile_timeout_s=settings.code_compile_timeout_s,
        )
        prepared.append(PreparedTest(i, request, expected, nonce, mode))
    return prepared


def judge(test: PreparedTest, result: RunResult) -> TestResult:
    """Turn one sandbox result into a test verdict."""
    if result.compile is not None and result.compile.status != ProcessStatus.ok:
        status = "sandbox_error" if result.compile.status == ProcessStatus.sandbox_error else "compile_error"
        return TestResult(index=test.index, status=status, message=result.compile.stderr[-2000:] or result.compile.message)
    run = result.run
    if run is None:
        return TestResult(index=test.index, status="sandbox_error", message="the sandbox returned no run")
    elapsed = run.execution_time_s
    if run.status != ProcessStatus.ok:
        tail = (run.stderr[-2000:] or run.message)
        return TestResult(index=test.index, status=_RUN_STATUS_TO_TEST[run.status], execution_time_s=elapsed, message=tail)
    if test.mode in ("stdin", "append"):
        stdout = run.stdout if test.nonce is None else code_checks.strip_append_marker(run.stdout, test.nonce)
        if stdout is None:
            return TestResult(index=test.index, status="failed", execution_time_s=elapsed,
                              message="no completion marker: the program exited before the appended checks finished")
        ok = code_checks.outputs_match(test.expected, stdout)
        note = "" if ok else "wrong output" + (" (output truncated)" if run.stdout_truncated else "")
    else:
        found, value = code_checks.parse_call_output(run.stdout, test.nonce)
        ok = found and code_checks.call_results_match(test.expected, value)
        note = "" if ok else ("wrong return value" if found else "no result marker: the program exited before the harness confirmed the test")
    return TestResult(index=test.index, status="passed" if ok else "failed", execution_time_s=elapsed, message=note)


async def _run_one(runner: Runner, test: PreparedTest) -> TestResult:
    return judge(test, await runner.run(test.request))


async def run_tests(runner: Runner, tests: list[PreparedTest], mode: str, settings: RewardSettings) -> list[TestResult]:
    """Run tests in `all` mode (waves, early stop) or `fraction` mode (bounded concurrency)."""
    results: list[TestResult] = []
    first = await _run_one(runner, tests[0])  # alone: a C++ binary is compiled once, then reused
    results.append(first)
    rest = tests[1:]
    if first.status == "compile_error":
        return results + [TestResult(index=t.index, status="compile_error", message="see test 0") for t in rest]
    if mode == "all":
        wave = settings.code_all_mode_wave
        while rest and all(r.status == "passed" for r in results):
            batch, rest = rest[:wave], rest[wave:]
            results.extend(await asyncio.gather(*[_run_one(runner, t) for t in batch]))
        return results + [TestResult(index=t.index, status="skipped", message="an earlier test failed") for t in rest]
    limit = asyncio.Semaphore(settings.code_test_concurrency)

    async def bounded(test: PreparedTest) -> TestResult:
        async with limit:
            return await _run_one(runner, test)

    return results + list(await asyncio.gather(*[bounded(t) for t in rest]))


def summarise(results: list[TestResult], total: int, mode: str) -> CodeVerifyResponse:
    passed = sum(r.status == "passed" for r in results)
    correct = passed == total
    reward = (1.0 if correct else 0.0) if mode == "all" else passed / total
    statuses = {r.status for r in results}
    status = "compile_error" if "compile_error" in statuses else "error" if "sandbox_error" in statuses else "ok"
    return CodeVerifyResponse(correct=correct, reward=reward, passed=passed, total=total, tests=results, status=status)


async def verify_code(runner: Runner, req: CodeVerifyRequest, settings: RewardSettings) -> CodeVerifyResponse:
    """Verify a program against its tests. Bad input raises RewardInputError; program behaviour never raises."""
    code, language = _program(req)
    total = len(req.tests.inputs)
    if code is None or not code.strip():
        skipped = [TestResult(index=i, status="skipped", message="no code") for i in range(total)]
        return CodeVerifyResponse(
            correct=False, reward=0.0, passed=0, total=total, tests=skipped, status="no_code",
            message="no fenced code block found in the completion",
        )
    tests = prepare_tests(req, code, language, settings)
    results = await run_tests(runner, tests, req.mode, settings)
    return summarise(results, total, req.mode)
