import pytest

from orchestrator.rewards import final_number_answer, score_item
from orchestrator.tasks.arithmetic import arithmetic_task
from orchestrator.tasks.base import Task


@pytest.mark.parametrize(
    ("completion", "sent"),
    [
        ("9 + 5 equals 14. Done", "\\boxed{14}"),
        # restating the question must not pass as the answer (math-verify would evaluate 9 + 5)
        ("10 is wrong. 9 + 5 must be", "\\boxed{5}"),
        ("5 - 8 = -3", "\\boxed{-3}"),
        ("It is \\boxed{12}, not 3", "It is \\boxed{12}, not 3"),
        ("no number here", ""),
        ("1,000 apples", "\\boxed{1000}"),
    ],
)
def test_final_number_answer(completion, sent):
    assert final_number_answer(completion) == sent


def test_arithmetic_items_use_the_final_number():
    task = arithmetic_task("train", 0, [1], 0)
    item = score_item(task, "the answer is 3 + 4", "x#0", 5.0)
    assert item == {"id": "x#0", "kind": "math", "completion": "\\boxed{4}", "ground_truth": task.ground_truth}


def test_code_items_pass_tests_through():
    task = Task(task_id="t", kind="code", messages=[{"role": "user", "content": "f"}],
                tests={"inputs": [""], "outputs": [""], "append_code": "\ncheck(f)\n"})
    item = score_item(task, "```python\ndef f():\n    return 1\n```", "t#1", 3.0)
    assert item == {"id": "t#1", "kind": "code", "completion": "```python\ndef f():\n    return 1\n```",
                    "tests": {"inputs": [""], "outputs": [""], "append_code": "\ncheck(f)\n"}, "timeout_per_test": 3.0}
