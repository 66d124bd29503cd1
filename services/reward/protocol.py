"""HTTP request/response models of the reward service (the documented boundary).

`/run_code` mirrors SandboxFusion's RunCodeRequest / RunCodeResponse field for
field, so SandboxFusion clients (verl's `sandbox_fusion` reward) work unchanged.
The `/v1/*` models are this service's own. Every field is described so the
OpenAPI schema at /openapi.json is complete.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ---------------------------------------------------------------- /run_code (SandboxFusion)


class RunCodeRequest(BaseModel):
    """SandboxFusion's /run_code request. Unknown extra fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    code: str = Field(..., description="The program's source code.", examples=['print("hello")'])
    language: str = Field(..., description="python (aliases python3, py) or cpp (aliases c++, cpp17...).", examples=["python"])
    stdin: str | None = Field(None, description="Text fed to the program's standard input.")
    compile_timeout: float | None = Field(None, gt=0, le=600, description="Compile time limit in seconds (C++).")
    run_timeout: float | None = Field(None, gt=0, le=600, description="Run wall-clock limit in seconds.")
    memory_limit_MB: int = Field(-1, ge=-1, le=65536, description="Memory limit in MB; -1 = the service default.")
    files: dict[str, str | None] = Field(default_factory=dict, description="Relative path -> base64 content, written into the work dir first.")
    fetch_files: list[str] = Field(default_factory=list, description="Accepted for compatibility; files are not fetched back (always {}).")
    args: list[str] = Field(default_factory=list, description="Accepted for compatibility (SandboxFusion's pytest args); ignored.")


class RunStatus(str, Enum):
    Success = "Success"  # every step finished with exit status 0
    Failed = "Failed"  # a step exited non-zero, was killed, or ran out of time
    SandboxError = "SandboxError"  # the sandbox failed, not the program


class CommandRunStatus(str, Enum):
    Finished = "Finished"
    Error = "Error"
    TimeLimitExceeded = "TimeLimitExceeded"


class CommandRunResult(BaseModel):
    """One step (compile or run), as SandboxFusion reports it."""

    status: CommandRunStatus = Field(..., description="Finished (any exit status), TimeLimitExceeded, or Error (sandbox fault).")
    execution_time: float | None = Field(None, description="Wall-clock seconds.")
    return_code: int | None = Field(None, description="Exit status; negative = killed by that signal (137/-9 also after the memory limit).")
    stdout: str | None = Field(None, description="Captured standard output (capped; see `message`).")
    stderr: str | None = Field(None, description="Captured standard error (capped).")


class RunCodeResponse(BaseModel):
    status: RunStatus = Field(..., description="Success, Failed or SandboxError (SandboxFusion semantics).")
    message: str = Field("", description="Details: memory limit reached, output truncated, sandbox error text.")
    compile_result: CommandRunResult | None = Field(None, description="The compile step (C++), else null.")
    run_result: CommandRunResult | None = Field(None, description="The run; null when compilation failed.")
    executor_pod_name: str | None = Field(None, description="Host name of the worker that ran it.")
    files: dict[str, str] = Field(default_factory=dict, description="Fetched files (always empty here).")


# ---------------------------------------------------------------- /v1/verify/math

MathStatus = Literal["ok", "no_answer", "timeout", "error"]


class MathVerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion: str = Field(..., description="The model's answer text; text after the last </think> is used, the last \\boxed{} first.")
    ground_truth: str = Field(..., min_length=1, description='Reference answer, plain ("42", "0.5", "\\frac{1}{2}") or LaTeX.')


class MathVerifyResponse(BaseModel):
    correct: bool = Field(..., description="math-verify's verdict verify(gold, answer).")
    reward: float = Field(..., description="1.0 if correct else 0.0.")
    extracted: str | None = Field(None, description="The answer found in the completion.")
    status: MathStatus = Field(..., description="ok | no_answer | timeout (hard deadline passed; worker killed) | error.")
    message: str = Field("", description="Why, when status is not ok.")
    elapsed_s: float = Field(0.0, description="Verification time in the worker, seconds.")


# ---------------------------------------------------------------- /v1/verify/code

TestStatus = Literal[
    "passed", "failed", "timeout", "memory_exceeded", "runtime_error", "compile_error", "skipped", "sandbox_error"
]
CodeStatus = Literal["ok", "compile_error", "no_code", "error"]


class CodeTests(BaseModel):
    """LiveCodeBench / TACO test cases."""

    model_config = ConfigDict(extra="ignore")

    inputs: list[Any] = Field(..., description="stdin texts, or (with fn_name) JSON argument lists.")
    outputs: list[Any] = Field(..., description="Expected stdout texts, or (with fn_name) expected return values.")
    fn_name: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Call-based mode: top-level function or Solution method name."
    )

    append_code: str | None = Field(
        None, description="Python code run after the program in the same namespace (HumanEval-style checks); "
        "a test passes only if it runs to its end, so an early exit fails. Not with fn_name.",
    )

    @model_validator(mode="after")
    def _same_length(self) -> CodeTests:
        if len(self.inputs) != len(self.outputs):
            raise ValueError(f"inputs has {len(self.inputs)} items but outputs has {len(self.outputs)}")
        if not self.inputs:
            raise ValueError("at least one test case is needed")
        if self.append_code is not None and self.fn_name is not None:
            raise ValueError("append_code and fn_name cannot be combined")
        return self


class CodeVerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion: str | None = Field(None, description="Model output; its last fenced code block is the program.")
    code: str | None = Field(None, description="The program itself (instead of completion).")
    language: str | None = Field(None, description="python or cpp; default: the code fence's tag, else python.")
    tests: CodeTests = Field(..., description="The test cases.")
    mode: Literal["all", "fraction"] = Field("all", description="all: reward 1 only if every test passes (stops at the first failure); fraction: passed/total.")
    timeout_per_test: float | None = Field(None, gt=0, le=600, description="Wall-clock limit per test, seconds.")
    memory_limit_mb: int | None = Field(None, ge=16, le=65536, description="Memory limit per test run, MB.")

    @model_validator(mode="after")
    def _has_code(self) -> CodeVerifyRequest:
        if self.completion is None and self.code is None:
            raise ValueError("give either `completion` or `code`")
        return self


class TestResult(BaseModel):
    index: int = Field(..., description="Position in tests.inputs.")
    status: TestStatus = Field(..., description="Outcome of this test.")
    execution_time_s: float = Field(0.0, description="Run time, seconds.")
    message: str = Field("", description="Why it did not pass (stderr tail, missing result marker...).")


class CodeVerifyResponse(BaseModel):
    correct: bool = Field(..., description="Every test passed.")
    reward: float = Field(..., description="mode all: 1.0 or 0.0; mode fraction: passed / total.")
    passed: int = Field(..., description="Tests passed.")
    total: int = Field(..., description="Tests given.")
    tests: list[TestResult] = Field(default_factory=list, description="Per-test results, in input order.")
    status: CodeStatus = Field(..., description="ok | compile_error | no_code (no code block found) | error.")
    message: str = Field("", description="Details when status is not ok.")


# ---------------------------------------------------------------- /v1/score


class ScoreRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"items": [
                {"kind": "math", "id": "a", "completion": "so \\boxed{42}", "ground_truth": "42"},
                {"kind": "code", "id": "b", "code": "print(int(input())*2)", "language": "python",
                 "tests": {"inputs": ["2\n"], "outputs": ["4\n"]}},
            ]}]
        },
    )

    items: list[Any] = Field(
        ..., description='Items {"kind": "math" | "code", "id": optional, ...the fields of MathVerifyRequest or '
        "CodeVerifyRequest}. Each item is validated on its own: a bad item gives an error result, not a failed batch.",
    )


class ScoreResult(BaseModel):
    id: str | int | None = Field(None, description="The item's id, echoed.")
    kind: str | None = Field(None, description="math or code (null when the item had no valid kind).")
    status: str = Field(..., description="math: ok|no_answer|timeout|error; code: ok|compile_error|no_code|error; invalid item: invalid.")
    correct: bool = Field(False, description="Verdict.")
    reward: float = Field(0.0, description="Reward (0 for errors).")
    message: str = Field("", description="Error details.")
    extracted: str | None = Field(None, description="math: the extracted answer.")
    elapsed_s: float | None = Field(None, description="math: verification time in the worker, seconds.")
    passed: int | None = Field(None, description="code: tests passed.")
    total: int | None = Field(None, description="code: tests given.")
    tests: list[TestResult] | None = Field(None, description="code: per-test results.")


class ScoreResponse(BaseModel):
    results: list[ScoreResult] = Field(..., description="One result per item, in request order.")


class HealthResponse(BaseModel):
    status: Literal["ok", "starting", "degraded"] = Field(..., description="ok when the sandbox and math workers are up.")
    sandbox: dict[str, Any] = Field(default_factory=dict, description="The sandbox's isolation report (what is enforced, how).")
    sandbox_stats: dict[str, Any] = Field(default_factory=dict, description="Sandbox pool counters.")
    math: dict[str, Any] = Field(default_factory=dict, description="Math worker pool counters.")
    queue_depth: int = Field(0, description="Requests waiting for a work slot.")
    inflight: int = Field(0, description="Requests being worked on.")
