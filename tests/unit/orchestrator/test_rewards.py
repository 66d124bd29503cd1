import pytest

from orchestrator.rewards import final_number_answer, last_code_block, score_item
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


def test_code_items_append_the_problem_harness():
    task = Task(task_id="t", kind="code", messages=[{"role": "user", "content": "f"}],
                tests={"inputs": [""], "outputs": ["OK"], "append_code": "\ncheck(f)\nprint('OK')\n"})
    item = score_item(task, "text\n```python\ndef f():\n    return 1\n```\nbye", "t#1", 3.0)
    assert item["code"] == "def f():\n    return 1\n\ncheck(f)\nprint('OK')\n"
    assert item["tests"] == {"inputs": [""], "outputs": ["OK"]} and item["language"] == "python"
    plain = Task(task_id="u", kind="code", messages=[{"role": "user", "content": "f"}],
                 tests={"inputs": ["1"], "outputs": ["1"]})
    assert score_item(plain, "c", "u#0", 3.0)["completion"] == "c"
    assert last_code_block("no fences") == "no fences"
