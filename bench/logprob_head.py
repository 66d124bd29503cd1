"""Benchmark: chunked LM-head log-probs (trainer.logprobs) vs the naive full-logits head.

Each variant runs forward + backward of the LM head followed by the ASPO loss
(trainer.losses), side by side in one invocation, and the script prints one
markdown table with ratios against the naive path.

  --device cpu   (default) SmolLM2 shapes N=4096, H=576, V=49152, fp32. Each
                 variant runs in a fresh subprocess: peak RSS delta over the
                 process after its inputs are built (ru_maxrss), median time.
  --device cuda  Qwen2.5-1.5B head shapes H=1536, V=151936, N=16384, bf16, plus
                 N=65536 (naive expected to run out of memory: reported, not
                 fatal). torch.cuda.max_memory_allocated (absolute, inputs and
                 weight included) and CUDA events; warm-up reps first (they
                 include torch.compile).
  --device cpu --dtype bfloat16 --smoke   runs the CUDA code path (bf16, fused
                 kernels, optionally --compile) on CPU at small shapes: a bug check.

Every variant is wrapped in try/except and reported; ``--out`` writes JSON.
Example: python bench/logprob_head.py --device cuda --quick --out /tmp/head.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout that is not pip-installed (the GPU box)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainer.logprobs as logprobs_module
from trainer.logprobs import auto_chunk_size, token_logprobs
from trainer.losses import LossInputs, compute_policy_loss

TOKENS_PER_RESPONSE = 1024


def build_inputs(n: int, h: int, v: int, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    """Hidden states, head weight, targets and the loss-side tensors for N tokens."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g) * 1.0).to(device=device, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) * h**-0.5).to(device=device, dtype=dtype).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    t = min(TOKENS_PER_RESPONSE, n)
    b = n // t
    old_shift = (torch.randn(b, t, generator=g) * 0.1).to(device)
    advantages = torch.randn(b, generator=g).to(device)
    mask = torch.ones(b, t, dtype=torch.bool, device=device)
    return {"hidden": hidden, "weight": weight, "targets": targets, "old_shift": old_shift, "advantages": advantages,
                "mask": mask, "b": b, "t": t}


def head_and_loss(x: dict, variant: str, chunk_size: int | None, use_compile: bool,
                  keep_bytes: int | None = None) -> torch.Tensor:
    """Forward of the head + ASPO loss; returns the loss (backward done by the caller)."""
    if variant == "naive":
        # What a user writes: full logits, fp32 log_softmax with grad, entropy without grad.
        logits = (x["hidden"] @ x["weight"].t()).float()
        logp_all = torch.log_softmax(logits, dim=-1)
        lp = logp_all.gather(1, x["targets"].unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1)
        del logits, logp_all
    else:
        lp, ent = token_logprobs(x["hidden"], x["weight"], x["targets"], chunk_size=chunk_size,
                                 use_compile=use_compile, keep_bytes=keep_bytes)
    b, t = x["b"], x["t"]
    lp = lp.view(b, t)
    inputs = LossInputs(lp, lp.detach() + x["old_shift"], x["advantages"], x["mask"], entropy=ent.view(b, t))
    return compute_policy_loss("aspo", inputs).loss


def run_variant(spec: dict) -> dict:
    """One variant: build inputs, warm up, time reps; memory by CUDA stats or RSS."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    n, h, v = spec["n"], spec["h"], spec["v"]
    row = dict(spec)
    x = build_inputs(n, h, v, dtype, device)
    chunk = spec.get("chunk_size")
    if spec["variant"] != "naive" and chunk is None:
        chunk = auto_chunk_size(v, x["weight"].element_size())
    row["chunk_rows"] = min(chunk, n) if spec["variant"] != "naive" else None
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _current_rss_bytes()

    def step() -> float:
        x["hidden"].grad = None
        x["weight"].grad = None
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        loss = head_and_loss(x, spec["variant"], chunk, spec.get("compile", False), spec.get("keep_bytes"))
        loss.backward()
        if cuda:
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        return (time.perf_counter() - t0) * 1e3

    warm = [step() for _ in range(spec["warmup"])]
    times = [step() for _ in range(spec["reps"])]
    row["warmup_ms"] = warm
    row["times_ms"] = times
    row["median_ms"] = statistics.median(times)
    if cuda:
        row["peak_bytes"] = torch.cuda.max_memory_allocated()
        row["base_bytes"] = base
    else:
        row["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
        row["base_bytes"] = base_rss
    row["grad_norm_hidden"] = float(x["hidden"].grad.float().norm())
    if spec.get("compile") and logprobs_module.COMPILE_ERRORS:
        row["compile_errors"] = dict(logprobs_module.COMPILE_ERRORS)  # it ran eager instead
    row["ok"] = True
    return row


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def safe_run(spec: dict) -> dict:
    """run_variant, with every failure (OOM included) reported as a row."""
    try:
        return run_variant(spec)
    except Exception as exc:  # noqa: BLE001  deliberate: a failing variant must not stop the benchmark
        row = dict(spec, ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        row["traceback"] = traceback.format_exc(limit=4)
        if spec["device"] == "cuda":
            torch.cuda.empty_cache()
        return row


def run_in_subprocess(spec: dict, timeout_s: float) -> dict:
    """Fresh process per CPU variant, so ru_maxrss measures only that variant."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return dict(spec, ok=False, error=f"timed out after {timeout_s:.0f}s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return dict(spec, ok=False, error=f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(lines[-1])


def plan(args: argparse.Namespace) -> list[dict]:
    reps, warmup = (3, 1) if args.quick else (args.reps, args.warmup)
    common = {"device": args.device, "dtype": args.dtype, "reps": reps, "warmup": warmup, "threads": args.threads,
              "keep_bytes": args.keep_bytes}
    if args.device == "cuda":
        n, h, v = args.n or 16384, args.h or 1536, args.v or 151936
        specs = [dict(common, variant="naive", n=n, h=h, v=v),
                 dict(common, variant="chunked", n=n, h=h, v=v, compile=True, chunk_size=args.chunk_size)]
        if not args.quick:
            specs += [dict(common, variant="chunked", n=n, h=h, v=v, compile=True, chunk_size=1024),
                      dict(common, variant="chunked-eager", n=n, h=h, v=v, compile=False,
                           chunk_size=args.chunk_size)]
        big = args.big_n
        specs.append(dict(common, variant="chunked", n=big, h=h, v=v, compile=True, chunk_size=args.chunk_size))
        if not args.quick:
            specs.append(dict(common, variant="chunked-eager", n=big, h=h, v=v, compile=False,
                              chunk_size=args.chunk_size))
        specs.append(dict(common, variant="naive", n=big, h=h, v=v, reps=1, warmup=0))
        return specs
    if args.smoke:
        n, h, v = args.n or 1024, args.h or 128, args.v or 4096
    else:
        n, h, v = args.n or 4096, args.h or 576, args.v or 49152
    chunk = args.chunk_size or 1024
    return [dict(common, variant="naive", n=n, h=h, v=v),
            dict(common, variant="chunked", n=n, h=h, v=v, compile=args.compile, chunk_size=chunk)]


def matmul_floor_ms(n: int, h: int, v: int, dtype: torch.dtype) -> float | None:
    """Measured time of one (N,H)x(H,V) matmul on this GPU (x4 = chunked floor, x3 = naive floor)."""
    try:
        a = torch.randn(n, h, device="cuda", dtype=dtype)
        b = torch.randn(h, v, device="cuda", dtype=dtype)
        for _ in range(2):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            a @ b
        end.record()
        torch.cuda.synchronize()
        del a, b
        torch.cuda.empty_cache()
        return start.elapsed_time(end) / 5
    except Exception:  # noqa: BLE001  deliberate: the floor is context, not a result
        return None


def table(rows: list[dict]) -> str:
    naive = {r["n"]: r for r in rows if r["variant"] == "naive" and r.get("ok")}
    lines = ["| variant | N | H | V | dtype | chunk rows | median ms | peak MiB | time vs naive | memory vs naive |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("ok"):
            lines.append(f"| {r['variant']} | {r['n']} | {r['h']} | {r['v']} | {r['dtype']} | | failed: "
                         f"{r.get('error', '?')[:80]} | | | |")
            continue
        ref = naive.get(r["n"])
        t_ratio = f"{r['median_ms'] / ref['median_ms']:.2f}x" if ref else "n/a"
        m_ratio = f"{r['peak_bytes'] / ref['peak_bytes']:.2f}x" if ref else "n/a"
        compiled = " (compile FAILED: eager)" if r.get("compile_errors") else " (compiled)" if r.get("compile") else ""
        lines.append(f"| {r['variant']}{compiled} | {r['n']} | {r['h']} | "
                     f"{r['v']} | {r['dtype']} | {r.get('chunk_rows') or '-'} | {r['median_ms']:.1f} | "
                     f"{r['peak_bytes'] / 2**20:.0f} | {t_ratio} | {m_ratio} |")
    return "\n".join(lines)


def merge_rounds(parts: list[dict]) -> dict:
    """One row from several rounds of a variant: median over all timed reps, worst peak."""
    good = [p for p in parts if p.get("ok")]
    if len(good) < len(parts):
        return next(p for p in parts if not p.get("ok"))
    row = dict(good[0])
    row["times_ms"] = [t for p in good for t in p["times_ms"]]
    row["median_ms"] = statistics.median(row["times_ms"])
    row["peak_bytes"] = max(p["peak_bytes"] for p in good)
    row["rounds"] = len(good)
    return row


def verdict(args: argparse.Namespace, rows: list[dict]) -> str:
    """The issue's targets, checked on the measured rows."""
    ok = [r for r in rows if r.get("ok") and r["variant"] == "chunked"]
    if args.device == "cuda":
        main_rows = [r for r in ok if r["n"] == 16384 and r.get("compile")]
        lines = [f"target N=16384 <= 43 ms and <= 2 GiB: chunk {r['chunk_rows']}: {r['median_ms']:.1f} ms, "
                 f"{r['peak_bytes'] / 2**30:.2f} GiB -> "
                 f"{'PASS' if r['median_ms'] <= 43 and r['peak_bytes'] <= 2**31 else 'MISS'}" for r in main_rows]
        big = [r for r in ok if r["n"] == args.big_n]
        lines.append(f"target N={args.big_n} runs: {'PASS' if big else 'MISS'}")
        return "\n".join(lines)
    naive = {r["n"]: r for r in rows if r.get("ok") and r["variant"] == "naive"}
    lines = []
    for r in ok:
        if r["n"] in naive:
            t = r["median_ms"] / naive[r["n"]]["median_ms"]
            m = r["peak_bytes"] / naive[r["n"]]["peak_bytes"]
            lines.append(f"target <= 0.25x memory at <= 1.0x time: {m:.2f}x memory, {t:.2f}x time -> "
                         f"{'PASS' if m <= 0.25 and t <= 1.0 else 'MISS'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    p.add_argument("--n", type=int, default=None, help="tokens (default by device)")
    p.add_argument("--h", type=int, default=None)
    p.add_argument("--v", type=int, default=None)
    p.add_argument("--big-n", type=int, default=65536, help="cuda: the large-N run")
    p.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: auto on cuda, 1024 cpu)")
    p.add_argument("--keep-bytes", type=int, default=None,
                   help="chunk buffers kept from forward to backward (default: the library's; 0 = recompute all)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer reps, skip the eager-chunked variant")
    p.add_argument("--smoke", action="store_true", help="cpu: small shapes, in-process (bug check)")
    p.add_argument("--compile", action="store_true", help="cpu: use torch.compile for the fused kernels")
    p.add_argument("--rounds", type=int, default=2, help="cpu: alternate naive/chunked this many times")
    p.add_argument("--threads", type=int, default=None, help="cpu: torch threads")
    p.add_argument("--timeout", type=float, default=900.0, help="cpu: per-variant subprocess timeout (s)")
    p.add_argument("--out", default=None, help="write JSON results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(safe_run(json.loads(args.worker))))
        return 0
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"}
    specs = plan(args)
    in_process = args.device == "cuda" or args.smoke
    rounds = 1 if in_process else max(1, args.rounds)
    results: list[list[dict]] = [[] for _ in specs]
    for _ in range(rounds):  # CPU: alternate the variants so that machine-load drift hits both
        for i, spec in enumerate(specs):
            row = safe_run(spec) if in_process else run_in_subprocess(spec, args.timeout)
            results[i].append(row)
            status = f"{row['median_ms']:.1f} ms, peak {row['peak_bytes'] / 2**20:.0f} MiB" if row.get("ok") \
                else row.get("error")
            print(f"[{spec['variant']} N={spec['n']}] {status}", flush=True)
    rows = [merge_rounds(r) for r in results]
    if args.device == "cuda":
        floor = matmul_floor_ms(rows[0]["n"], rows[0]["h"], rows[0]["v"], getattr(torch, args.dtype))
        env["one_matmul_ms"] = floor
    print()
    print(table(rows))
    if env.get("one_matmul_ms"):
        print(f"\nOne (N,H)x(H,V) matmul: {env['one_matmul_ms']:.1f} ms (naive floor x3, chunked floor x4).")
    print("\n" + verdict(args, rows))
    print(f"\nenv: {json.dumps(env)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)
    return 0 if all(r.get("ok") or r["variant"] == "naive" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
