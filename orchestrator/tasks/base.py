"""The `Task` record shared by every task source."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class Task(BaseModel):
    """One prompt with its reference: a math ground truth or code tests.

    Invariant: exactly one of ``ground_truth`` (kind "math") or ``tests``
    (kind "code") is set.
    """

    task_id: str
    kind: Literal["math", "code"]
    messages: list[dict[str, str]] = Field(description="Chat messages; the chat template is applied by the orchestrator.")
    ground_truth: str | None = None
    tests: dict[str, Any] | None = Field(None, description="LiveCodeBench/TACO format: inputs, outputs, optional fn_name.")
    level: int | None = Field(None, description="Difficulty level where the source has one.")
    answer: Literal["math", "final_number"] = Field(
        "math",
        description="How a math answer is taken from the completion: `math` = the reward service's "
        "extraction (last \\boxed{}, then math-verify's fallbacks); `final_number` = the last \\boxed{} "
        "if there is one, else the last number in the text.",
    )

    @model_validator(mode="after")
    def _reference_matches_kind(self) -> "Task":
        if self.kind == "math" and self.ground_truth is None:
            raise ValueError(f"task {self.task_id}: kind 'math' needs ground_truth")
        if self.kind == "code" and self.tests is None:
            raise ValueError(f"task {self.task_id}: kind 'code' needs tests")
        return self
