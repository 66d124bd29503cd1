"""Pure logic of code verification: code extraction, output comparison, call-based decoding."""

from __future__ import annotations

import pytest

from services.reward import code_checks as cc


def test_last_fenced_block_wins_and_tag_maps_to_language() -> None:
    text = "plan\n```python\nprint(1)\n```\nfinal:\n```c++\nint main(){return 0;}\n```\n"
    code, lang = cc.extract_code(text)
    assert code == "int main(){return 0;}\n" and lang == "cpp"


def test_code_after_think_is_preferred_over_code_inside_reasoning() -> None:
    text = "<think>```python\nprint('draft')\n```</think>answer:\n```py\nprint('final')\n```"
    assert cc.extract_code(text) == ("print('final')\n", "python")


def test_untagged_fence_and_no_fence() -> None:
    assert cc.extract_code("```\nx = 1\n```") == ("x = 1\n", None)
    assert cc.extract_code("no code here") == (None, None)


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        ("1 2\n3\n", "1 2   \n3\n\n\n", True),     # trailing spaces and blank lines ignored
        ("0.3333333", "0.33333334", True),        # within 1e-6
        ("1000000", "1000000.5", True),           # relative 1e-6
        ("0.5", "0.51", False),
        ("1 2", "1  2", True),                    # differing lines compared token by token
        ("YES", "yes", False),
        ("a\nb", "a", False),
        (" x", "x", True),                         # a differing line is compared by tokens
        ("nan", "nan", True),                      # identical text
        ("inf", "1e309", False),                   # non-finite values compare as text only
    ],
)
def test_outputs_match(expected: str, actual: str, same: bool) -> None:
    assert cc.outputs_match(expected, actual) is same


def test_call_args_decode_jsonl_string_and_list() -> None:
    assert cc.decode_call_args('[1, 2]\n"ab"\n') == [[1, 2], "ab"]
    assert cc.decode_call_args([[1, 2], 3]) == [[1, 2], 3]
    with pytest.raises(ValueError, match="JSON"):
        cc.decode_call_args("not json")
    with pytest.raises(ValueError, match="list"):
        cc.decode_call_args(5)


def test_call_results_tuples_equal_lists_and_taco_wrapping() -> None:
    assert cc.call_results_match([1, [2, 3]], (1, (2, 3)))
    assert cc.call_results_match([[1, 2]], [1, 2])   # TACO wraps the expected value in a list
    assert cc.call_results_match(0.1 + 0.2, 0.3)
    assert not cc.call_results_match(True, 1)        # bool is not int
    assert not cc.call_results_match([1, 2], [2, 1])
    assert cc.call_results_match({"a": (1,)}, {"a": [1]})


def test_nonce_marker_is_required_and_must_be_the_harness_one() -> None:
    nonce = cc.new_nonce()
    assert cc.parse_call_output(f"noise\n{nonce} [1, 2]\n", nonce) == (True, [1, 2])
    assert cc.parse_call_output("other 5\n", nonce) == (False, None)
    assert cc.parse_call_output("", nonce) == (False, None)


def test_harness_embeds_code_as_a_literal() -> None:
    program = cc.call_harness('s = """tricky\'\'\' quotes"""\ndef f(): return s', "f")
    compile(program, "<harness>", "exec")  # the user code cannot break out of the literal
    assert "_FN_NAME = 'f'" in program


def test_taco_list_inputs_and_outputs_become_text() -> None:
    assert cc.stdin_text(["1 2", "3"]) == "1 2\n3\n"
    assert cc.expected_stdout(["4", "5"]) == "4\n5"
    assert cc.decode_expected_value("[1, 2]") == [1, 2]
    assert cc.decode_expected_value("plain words") == "plain words"


def test_append_marker_must_close_the_output_exactly() -> None:
    nonce = cc.new_nonce()
    assert cc.strip_append_marker(f"42\n\n{nonce}\n", nonce) == "42\n"
    assert cc.strip_append_marker(f"\n{nonce}\n", nonce) == ""
    assert cc.strip_append_marker(f"\n{nonce}\nmore output after\n", nonce) is None
    assert cc.strip_append_marker("42\n", nonce) is None
    program = cc.append_harness("x = 1", "assert x == 1", nonce)
    compile(program, "<harness>", "exec")
