"""/v1/verify/code against the real service: both languages, both test formats, early exits."""

from __future__ import annotations

import httpx
import pytest

CPP_DOUBLE = "#include <cstdio>\nint main(){long x; if(scanf(\"%ld\",&x)!=1) return 1; printf(\"%ld\\n\", 2*x);}\n"
STDIN_TESTS = {"inputs": ["1\n", "5\n", "-3\n"], "outputs": ["2\n", "10", "-6\n"]}


def verify(client: httpx.Client, **body: object) -> dict:
    response = client.post("/v1/verify/code", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "program",
    [
        "print(2 * int(input()))",
        "import sys\nfor line in sys.stdin:\n    print(2 * int(line))",
        "import sys\nprint(2 * int(sys.stdin.buffer.readline()))",   # real stdin: .buffer exists
        "import sys\nprint(2 * int(sys.stdin.readline()))",
    ],
)
def test_python_stdin_programs_pass_with_real_stdin(client: httpx.Client, program: str) -> None:
    res = verify(client, code=program, language="python", tests=STDIN_TESTS)
    assert res["correct"] and res["reward"] == 1.0 and res["passed"] == 3, res


def test_completion_with_cpp_block_correct_and_wrong(client: httpx.Client) -> None:
    good = verify(client, completion=f"Here:\n```cpp\n{CPP_DOUBLE}```\n", tests=STDIN_TESTS)
    assert good["correct"] and good["status"] == "ok", good
    wrong = CPP_DOUBLE.replace("2*x", "2*x+(x==5)")
    bad = verify(client, completion=f"```c++\n{wrong}```", tests=STDIN_TESTS, mode="fraction")
    assert not bad["correct"] and bad["passed"] == 2 and bad["reward"] == pytest.approx(2 / 3)
    assert [t["status"] for t in bad["tests"]] == ["passed", "failed", "passed"]


def test_cpp_compile_error(client: httpx.Client) -> None:
    res = verify(client, code="int main( {", language="cpp", tests=STDIN_TESTS)
    assert res["status"] == "compile_error" and res["reward"] == 0.0
    assert {t["status"] for t in res["tests"]} == {"compile_error"}


def test_all_mode_stops_at_first_failure(client: httpx.Client) -> None:
    tests = {"inputs": [str(i) for i in range(8)], "outputs": ["0", "2", "WRONG"] + [str(2 * i) for i in range(3, 8)]}
    res = verify(client, code="print(2 * int(input()))", tests=tests)
    statuses = [t["status"] for t in res["tests"]]
    assert statuses[2] == "failed" and statuses[-1] == "skipped" and res["reward"] == 0.0


def test_timeout_and_runtime_error_statuses(client: httpx.Client) -> None:
    tests = {"inputs": ["1", "2"], "outputs": ["2", "4"]}
    slow = verify(client, code="while True: pass", tests=tests, timeout_per_test=1, mode="fraction")
    assert [t["status"] for t in slow["tests"]] == ["timeout", "timeout"]
    crash = verify(client, code="raise SystemExit(3)", tests=tests, mode="fraction")
    assert {t["status"] for t in crash["tests"]} == {"runtime_error"}


LCB_TESTS = {"inputs": ["[1, 2, 3]\n2", "[]\n5"], "outputs": ["[2, 4, 6]", "[]"], "fn_name": "scale"}


def test_call_based_solution_method_and_top_level_function(client: httpx.Client) -> None:
    method = "from typing import List\nclass Solution:\n    def scale(self, xs: List[int], k: int) -> List[int]:\n        return [x * k for x in xs]\n"
    assert verify(client, code=method, tests=LCB_TESTS)["correct"]
    function = "def scale(xs, k):\n    return tuple(x * k for x in xs)\n"   # tuples equal lists
    assert verify(client, code=function, tests=LCB_TESTS)["correct"]
    taco = {"inputs": [[[1, 2], 3]], "outputs": [[[3, 6]]], "fn_name": "scale"}   # TACO: args list, wrapped output
    assert verify(client, code=function, tests=taco)["correct"]
    wrong = "def scale(xs, k):\n    return xs\n"
    assert not verify(client, code=wrong, tests=LCB_TESTS)["correct"]


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "exit()\n",
        "def scale(xs, k):\n    import os\n    os._exit(0)\n",
        "def scale(xs, k):\n    raise SystemExit(0)\n",
        "import sys\nprint('[2, 4, 6]')\nsys.stdout.flush()\nsys.exit(0)\n",
    ],
)
def test_early_exit_zero_never_passes(client: httpx.Client, cheat: str) -> None:
    res = verify(client, code=cheat, tests=LCB_TESTS, mode="fraction")
    assert res["passed"] == 0 and res["reward"] == 0.0, res


HUMANEVAL_STYLE = {
    "inputs": [""], "outputs": [""],
    "append_code": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n\ncheck(double)\n",
}


def test_appended_checks_pass_for_a_correct_solution_and_fail_for_a_wrong_one(client: httpx.Client) -> None:
    assert verify(client, completion="```python\ndef double(x):\n    return 2 * x\n```", tests=HUMANEVAL_STYLE)["correct"]
    wrong = verify(client, code="def double(x):\n    return x + 2\n", tests=HUMANEVAL_STYLE)
    assert not wrong["correct"] and wrong["tests"][0]["status"] == "runtime_error"


@pytest.mark.parametrize(
    "cheat",
    ["import sys\nsys.exit(0)\ndef double(x): pass\n", "import os\nos._exit(0)\n",
     "def double(x):\n    return 0\nexit()\n", "def double(x):\n    raise SystemExit(0)\n"],
)
def test_early_exit_before_appended_checks_fails(client: httpx.Client, cheat: str) -> None:
    res = verify(client, code=cheat, tests=HUMANEVAL_STYLE)
    assert not res["correct"] and res["reward"] == 0.0, res
