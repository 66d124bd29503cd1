"""Pure pieces of code verification: code extraction, test decoding, harnesses, output comparison.

Test format: LiveCodeBench / TACO `{"inputs": [...], "outputs": [...], "fn_name": optional}`.
- stdin/stdout mode (no fn_name): each input is the program's stdin, each output
  its expected stdout. Python programs get the real stdin (sys.stdin.buffer,
  readline, iteration and input() all work), not a mock.
- call-based mode (fn_name, Python only): the harness calls a top-level function
  `fn_name` or `Solution().fn_name`. Inputs are JSON argument lists: a string with
  one JSON value per line (LiveCodeBench) or a list of arguments (TACO). The
  expected output is a JSON value (LiveCodeBench: a JSON string; TACO: the value,
  often wrapped in a one-element list, which is accepted as TACO's checker does).

Checks appended to the program (`append_code`, Python, HumanEval style): the
program and the checks run in one namespace under a harness that prints a
random nonce only after the last line of the checks ran; an exit anywhere
before (sys.exit(0) at import, os._exit(0)) leaves no nonce and fails.

Early exits: the call-based harness reads a random nonce from stdin *before* the
user code is loaded and prints `nonce + JSON(result)` only after the call
returned; a program that exits early (sys.exit(0), os._exit(0), exit() at import)
leaves no marker and fails. The comparison runs here, outside the sandbox.
Not protected against: code that deliberately digs the nonce out of the
harness's frames; the sandbox contains such code, the reward does not.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from typing import Any

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_LANG_TAGS = {
    "python": "python", "py": "python", "python3": "python",
    "cpp": "cpp", "c++": "cpp", "cc": "cpp", "cxx": "cpp",
}
FLOAT_TOLERANCE = 1e-6


def extract_code(completion: str) -> tuple[str | None, str | None]:
    """The last fenced code block of a completion and its language tag (None when untagged).

    Text after the last `</think>` is searched first; the whole completion if it has none.
    """
    idx = completion.rfind("</think>")
    for text in ([completion[idx + 8:]] if idx >= 0 else []) + [completion]:
        blocks = _FENCE_RE.findall(text)
        if blocks:
            tag, body = blocks[-1]
            return body, _LANG_TAGS.get(tag.lower()) if tag else None
    return None, None


def _is_number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tokens_equal(expected: str, actual: str) -> bool:
    if expected == actual:
        return True
    a, b = _is_number(expected), _is_number(actual)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)


def _normalised_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def outputs_match(expected: str, actual: str) -> bool:
    """stdout comparison: trailing whitespace per line and trailing blank lines ignored;
    a line that differs is compared token by token, numbers equal within 1e-6 (abs or rel)."""
    exp_lines, act_lines = _normalised_lines(expected), _normalised_lines(actual)
    if len(exp_lines) != len(act_lines):
        return False
    for exp, act in zip(exp_lines, act_lines):
        if exp == act:
            continue
        exp_tokens, act_tokens = exp.split(), act.split()
        if len(exp_tokens) != len(act_tokens):
            return False
        if not all(_tokens_equal(e, a) for e, a in zip(exp_tokens, act_tokens)):
            return False
    return True


def expected_stdout(value: Any) -> str:
    """An expected stdout given as text, or (TACO) as a list of lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return json.dumps(value) if not isinstance(value, (int, float)) else str(value)


def stdin_text(value: Any) -> str:
    """A test input for stdin mode: text, or (TACO) a list of lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value) + "\n"
    return json.dumps(value)


def decode_call_args(value: Any) -> list[Any]:
    """Arguments of one call-based test. Raises ValueError naming the problem."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            return [json.loads(line) for line in value.split("\n") if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"call-based input is not one JSON value per line: {err}") from None
    raise ValueError(f"call-based input must be a JSON-lines string or a list, got {type(value).__name__}")


def decode_expected_value(value: Any) -> Any:
    """Expected return value of a call-based test: a JSON string is decoded, anything else kept."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def _values_equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or expected == actual and type(expected) is type(actual)
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(_values_equal(e, a) for e, a in zip(expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(_values_equal(expected[k], actual[k]) for k in expected)
    return expected == actual


def call_results_match(expected: Any, actual: Any) -> bool:
    """Returned value vs expected: tuples equal lists, numbers within 1e-6; a one-element
    list expected also matches its element (TACO wraps outputs that way)."""
    expected, actual = _canonical(expected), _canonical(actual)
    if _values_equal(expected, actual):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _values_equal(expected[0], actual)


_HARNESS = '''\
import json as _json, sys as _sys
_nonce = _sys.stdin.readline().strip()
_args = _json.loads(_sys.stdin.read())
_ns = {"__name__": "__solution__", "__builtins__": __builtins__}
_sys.setrecursionlimit(max(_sys.getrecursionlimit(), 100000))
exec(compile(_USER_CODE, "<solution>", "exec"), _ns)
_fn = _ns.get(_FN_NAME)
if _fn is None and isinstance(_ns.get("Solution"), type):
    _fn = getattr(_ns["Solution"](), _FN_NAME, None)
if not callable(_fn):
    raise SystemExit("harness: no function or Solution method named " + repr(_FN_NAME))
_result = _fn(*_args)
try:
    _payload = _json.dumps(_result)
except (TypeError, ValueError):
    _payload = _json.dumps(repr(_result))
_sys.stdout.flush()
_sys.stdout.write("\\n" + _nonce + " " + _payload + "\\n")
_sys.stdout.flush()
'''


_APPEND_HARNESS = '''\
import sys as _sys
_ns = {"__name__": "__main__", "__builtins__": __builtins__}
exec(compile(_USER_CODE + "\\n" + _APPEND_CODE, "<solution>", "exec"), _ns)
_sys.stdout.flush()
_sys.stdout.write("\\n" + _NONCE + "\\n")
_sys.stdout.flush()
'''


def append_harness(user_code: str, append_code: str, nonce: str) -> str:
    """A Python program that runs `user_code` then `append_code` and prints `nonce` only if both ran to the end."""
    return f"_USER_CODE = {user_code!r}\n_APPEND_CODE = {append_code!r}\n_NONCE = {nonce!r}\n" + _APPEND_HARNESS


def strip_append_marker(stdout: str, nonce: str) -> str | None:
    """The program's own stdout without the harness's final nonce line; None when the nonce is missing."""
    marker = "\n" + nonce + "\n"
    if not stdout.endswith(marker):
        return None
    return stdout[: -len(marker)]


def call_harness(user_code: str, fn_name: str) -> str:
    """A Python program that calls `fn_name` with arguments from stdin (after a nonce line)."""
    return f"_USER_CODE = {user_code!r}\n_FN_NAME = {fn_name!r}\n" + _HARNESS


def new_nonce() -> str:
    return secrets.token_hex(16)


def call_stdin(nonce: str, args: list[Any]) -> bytes:
    return (nonce + "\n" + json.dumps(args)).encode()


def parse_call_output(stdout: str, nonce: str) -> tuple[bool, Any]:
    """(found, value) from the harness's marker line; found is False without a marker."""
    prefix = nonce + " "
    for line in reversed(stdout.splitlines()):
        if line.startswith(prefix):
            try:
                return True, json.loads(line[len(prefix):])
            except json.JSONDecodeError:
                return False, None
    return False, None
