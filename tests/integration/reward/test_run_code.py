"""/run_code against the real service and sandbox: programs, verl's client contract, attack classes."""

from __future__ import annotations

import json

import httpx
import psutil

CPP_SUM = "#include <iostream>\nint main(){long a,b; std::cin>>a>>b; std::cout<<a+b<<std::endl; return 0;}\n"


def run(client: httpx.Client, code: str, language: str = "python", **kw: object) -> dict:
    response = client.post("/run_code", json={"code": code, "language": language, **kw})
    assert response.status_code == 200, response.text
    return response.json()


def test_python_and_cpp_programs_run_with_stdin(client: httpx.Client) -> None:
    py = run(client, "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))", stdin="3 4\n")
    assert py["status"] == "Success" and py["run_result"]["stdout"] == "7\n" and py["compile_result"] is None
    cpp = run(client, CPP_SUM, "cpp", stdin="40 2")
    assert cpp["status"] == "Success" and cpp["run_result"]["stdout"].strip() == "42"
    assert cpp["compile_result"]["status"] == "Finished" and cpp["compile_result"]["return_code"] == 0


def test_failures_are_reported_the_sandboxfusion_way(client: httpx.Client) -> None:
    err = run(client, "raise ValueError('boom')")
    assert err["status"] == "Failed" and err["run_result"]["status"] == "Finished"
    assert err["run_result"]["return_code"] != 0 and "boom" in err["run_result"]["stderr"]
    slow = run(client, "while True: pass", run_timeout=1)
    assert slow["status"] == "Failed" and slow["run_result"]["status"] == "TimeLimitExceeded"
    broken = run(client, "int main( { return 0; }", "cpp")
    assert broken["status"] == "Failed" and broken["run_result"] is None
    assert broken["compile_result"]["return_code"] != 0 and broken["compile_result"]["stderr"]


def test_verl_sandbox_fusion_client_contract(reward_url: str) -> None:
    """Drive /run_code exactly as verl's call_sandbox_api does and parse the answer as its
    _process_single_case does (verl/utils/reward_score/sandbox_fusion/utils.py)."""
    payload = json.dumps({
        "compile_timeout": 10, "run_timeout": 10, "code": "print(input()[::-1])", "stdin": "abc\n",
        "memory_limit_MB": 1024, "language": "python", "files": {}, "fetch_files": [],
    })
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    response = httpx.post(f"{reward_url}/run_code", headers=headers, content=payload, timeout=30)
    response.raise_for_status()
    api_response = response.json()
    run_result = api_response.get("run_result")
    assert api_response.get("status") == "Success"
    assert run_result and run_result.get("status") == "Finished"
    actual_output = run_result.get("stdout") if run_result.get("stdout") is not None else ""
    assert str(actual_output).rstrip("\n") == "cba"
    assert isinstance(run_result.get("execution_time"), float) and run_result.get("return_code") == 0


def test_fork_bomb_is_contained(client: httpx.Client) -> None:
    res = run(client, "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", run_timeout=2)
    assert res["status"] == "Failed"
    assert client.get("/health").json()["status"] == "ok"
    assert run(client, "print('alive')")["run_result"]["stdout"] == "alive\n"


def test_memory_bomb_is_stopped(client: httpx.Client) -> None:
    res = run(client, "x = []\nwhile True:\n    x.append(bytearray(50 << 20))", memory_limit_MB=256, run_timeout=10)
    assert res["status"] == "Failed" and res["run_result"]["return_code"] != 0


def test_endless_output_is_capped_not_a_timeout(client: httpx.Client) -> None:
    res = run(client, "while True:\n    print('x' * 1000)", run_timeout=10)
    assert res["status"] == "Failed" and "truncated" in res["message"]
    assert res["run_result"]["status"] != "TimeLimitExceeded"
    assert len(res["run_result"]["stdout"]) <= (1 << 20) + 4096


def test_no_network(client: httpx.Client) -> None:
    code = (
        "import socket\n"
        "for host in [('1.1.1.1', 53), ('127.0.0.1', 22), ('pypi.org', 443)]:\n"
        "    try:\n"
        "        socket.create_connection(host, timeout=2); print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('blocked', type(e).__name__)\n"
    )
    res = run(client, code, run_timeout=15)
    assert "CONNECTED" not in res["run_result"]["stdout"] and res["run_result"]["stdout"].count("blocked") == 3


def test_host_files_and_environment_are_hidden(client: httpx.Client, server_secret: str) -> None:
    code = (
        "import os\nprint(dict(os.environ))\n"
        "for p in ['/work/main/pyproject.toml', '/root/.bash_history', '/etc/shadow', '/proc/1/environ']:\n"
        "    try:\n        print(p, open(p).read()[:200])\n    except OSError as e:\n        print(p, 'denied', e.errno)\n"
    )
    out = run(client, code)["run_result"]["stdout"]
    assert server_secret not in out and "ASPO_" not in out
    assert "aspo-rl" not in out  # the project's pyproject.toml is not visible
    assert "root:" not in out    # /etc/shadow content


def test_setsid_orphan_does_not_survive(client: httpx.Client) -> None:
    marker = "987.6543"
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execlp('sleep', 'sleep', '{marker}')\n"
        "print('parent done')\n"
    )
    res = run(client, code, run_timeout=5)
    assert res["run_result"]["stdout"] == "parent done\n"
    survivors = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]]
    assert survivors == []
