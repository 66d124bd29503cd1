"""Answer extraction and single-item verification (math-verify called directly, in this process)."""

from __future__ import annotations

import pytest

from services.reward.math_verifier import extract_boxed, final_segment, verify_item


def test_last_boxed_with_nested_braces() -> None:
    assert extract_boxed(r"first \boxed{1} then \boxed{\frac{a}{b^{2}}} done") == r"\frac{a}{b^{2}}"
    assert extract_boxed(r"\fbox{7}") == "7"
    assert extract_boxed(r"\boxed {x}") == "x"


def test_unclosed_box_is_not_an_answer_but_an_earlier_closed_one_is() -> None:
    assert extract_boxed(r"\boxed{12") is None
    assert extract_boxed(r"\boxed{3} and then \boxed{12") == "3"


def test_only_text_after_last_think_counts() -> None:
    assert final_segment("<think>\\boxed{1}</think>x</think>\\boxed{2}") == "\\boxed{2}"
    assert final_segment("no think") == "no think"


@pytest.mark.parametrize(
    ("gold", "completion", "correct"),
    [
        ("42", r"so the answer is \boxed{42}.", True),
        (r"\frac{1}{2}", r"\boxed{0.5}", True),
        ("0.5", r"\boxed{\frac{1}{2}}", True),
        ("1/2", r"\boxed{\dfrac{1}{2}}", True),
        (r"$x^2+1$", r"\boxed{1+x^{2}}", True),
        ("42", r"\boxed{41}", False),
        ("3", "<think>maybe \\boxed{3}</think> The final answer is \\boxed{4}", False),
        ("3", "<think>maybe \\boxed{4}</think> The final answer is $3$", True),
        ("7", "after all that the result is 7", True),   # plain-expression fallback
    ],
)
def test_verify_item_verdicts(gold: str, completion: str, correct: bool) -> None:
    result = verify_item(gold, completion)
    assert result["status"] == "ok", result
    assert result["correct"] is correct


def test_no_answer_is_reported_as_such() -> None:
    result = verify_item("42", "I do not know.")
    assert result["status"] == "no_answer" and result["correct"] is False
