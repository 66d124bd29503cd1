"""Logic around the sandbox in code verification (modes, early stop, judging), with an in-memory fake runner.

The real sandbox is exercised in tests/integration/reward/.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sandbox.protocol import ProcessResult, ProcessStatus, RunRequest, RunResult
from services.reward.code_verifier import verify_code
from services.reward.errors import RewardInputError
from services.reward.protocol import CodeVerifyRequest
from services.reward.settings import RewardSettings

SETTINGS = RewardSettings(code_all_mode_wave=2, code_test_concurrency=3)


class FakeRunner:
    """Doubles its integer stdin; stdin 'hang' times out; records what ran."""

    def __init__(self, compile_fails: bool = False) -> None:
        self.calls: list[RunRequest] = []
        self.compile_fails = compile_fails

    async def run(self, request: RunRequest) -> RunResult:
        self.calls.append(request)
        await asyncio.sleep(0)
        if self.compile_fails:
            return RunResult(compile=ProcessResult(status=ProcessStatus.nonzero_exit, return_code=1, stderr="error"))
        text = request.stdin.decode()
        if text.strip() == "hang":
            return RunResult(run=ProcessResult(status=ProcessStatus.timeout, return_code=-9, timed_out=True))
        return RunResult(run=ProcessResult(status=ProcessStatus.ok, return_code=0, stdout=f"{2 * int(text)}\n"))


def _req(outputs: list[str], mode: str = "all", inputs: list[str] | None = None) -> CodeVerifyRequest:
    inputs = inputs or [str(i) for i in range(len(outputs))]
    return CodeVerifyRequest(code="whatever", language="python", mode=mode, tests={"inputs": inputs, "outputs": outputs})


def test_all_mode_stops_early_and_skips_the_rest() -> None:
    runner = FakeRunner()
    outputs = ["0", "2", "999", "6", "8", "10", "12"]   # test 2 is wrong
    res = asyncio.run(verify_code(runner, _req(outputs), SETTINGS))
    statuses = [t.status for t in res.tests]
    assert statuses[:3] == ["passed", "passed", "failed"]
    assert set(statuses[4:]) == {"skipped"} and res.reward == 0.0 and not res.correct
    assert len(runner.calls) <= 4   # first alone, then waves of 2: nothing after the failing wave
    assert [t.index for t in res.tests] == list(range(7))


def test_fraction_mode_runs_everything_and_gives_the_fraction() -> None:
    runner = FakeRunner()
    res = asyncio.run(verify_code(runner, _req(["0", "2", "999", "hang?"], mode="fraction",
                                                inputs=["0", "1", "2", "hang"]), SETTINGS))
    assert [t.status for t in res.tests] == ["passed", "passed", "failed", "timeout"]
    assert res.reward == pytest.approx(0.5) and res.passed == 2 and res.total == 4 and len(runner.calls) == 4


def test_compile_error_marks_every_test_and_runs_once() -> None:
    runner = FakeRunner(compile_fails=True)
    res = asyncio.run(verify_code(runner, _req(["0", "2", "4"], mode="fraction"), SETTINGS))
    assert res.status == "compile_error" and {t.status for t in res.tests} == {"compile_error"}
    assert len(runner.calls) == 1


def test_no_code_block_gives_no_code() -> None:
    req = CodeVerifyRequest(completion="I would write a loop.", tests={"inputs": ["1"], "outputs": ["2"]})
    res = asyncio.run(verify_code(FakeRunner(), req, SETTINGS))
    assert res.status == "no_code" and res.reward == 0.0


class MarkerRunner:
    """Imitates the call-based harness: prints the marker unless told the program exits early."""

    def __init__(self, early_exit: bool) -> None:
        self.early_exit = early_exit

    async def run(self, request: RunRequest) -> RunResult:
        nonce, args = request.stdin.decode().split("\n", 1)
        out = "" if self.early_exit else f"{nonce} {json.dumps(sum(json.loads(args)))}\n"
        return RunResult(run=ProcessResult(status=ProcessStatus.ok, return_code=0, stdout=out))


def test_call_based_needs_the_nonce_marker() -> None:
    tests = {"inputs": ["1\n2", [3, 4]], "outputs": ["3", [7]], "fn_name": "add"}
    req = CodeVerifyRequest(code="def add(a, b): return a + b", tests=tests, mode="fraction")
    good = asyncio.run(verify_code(MarkerRunner(early_exit=False), req, SETTINGS))
    assert good.correct and good.reward == 1.0
    bad = asyncio.run(verify_code(MarkerRunner(early_exit=True), req, SETTINGS))
    assert not bad.correct and all("marker" in t.message for t in bad.tests)


def test_bad_tests_raise_input_errors_naming_the_field() -> None:
    with pytest.raises(RewardInputError) as info:
        req = CodeVerifyRequest(code="x", language="cpp", tests={"inputs": ["1"], "outputs": ["1"], "fn_name": "f"})
        asyncio.run(verify_code(FakeRunner(), req, SETTINGS))
    assert info.value.status_code == 400 and info.value.field == "tests.fn_name"
    with pytest.raises(RewardInputError) as info:
        req = CodeVerifyRequest(code="x", tests={"inputs": ["{bad"], "outputs": ["1"], "fn_name": "f"})
        asyncio.run(verify_code(FakeRunner(), req, SETTINGS))
    assert info.value.status_code == 422 and info.value.field == "tests.inputs.0"
    with pytest.raises(ValueError, match="outputs"):
        CodeVerifyRequest(code="x", tests={"inputs": ["1", "2"], "outputs": ["1"]})
