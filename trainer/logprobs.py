"""Memory-efficient token log-probs and entropy through the LM head.

The trainer's model code (``trainer.model.completion_logprobs``) passes the
final hidden states of the response positions and the LM-head weight here;
the policy losses (``trainer.losses``) consume the result. The full
``(N, V)`` logits are never materialised: a custom autograd function runs the
head ``chunk_size`` rows at a time, keeps only per-row statistics (logsumexp,
entropy) in forward and recomputes each chunk's logits in backward, where it
accumulates ``grad_hidden`` and ``grad_weight`` chunk by chunk (the same
recompute-in-backward idea as Liger-Kernel's fused linear cross-entropy and
verl's ``entropy_checkpointing``, extended to the entropy's gradient).

Recomputing costs a fourth ``(N, H) x (H, V)`` matmul (the full-logits path
needs three). The last chunks that fit ``keep_bytes`` (default
:data:`DEFAULT_KEEP_BYTES`, a fixed budget so peak memory stays bounded
whatever N is) are instead kept from forward to backward, which skips their
recompute matmul: the CPU path keeps them as fp32 log-probs (the buffer is
already fp32 and backward then skips two passes), the fused path keeps the raw
logits. Backward walks the chunks last to first, so kept chunks are consumed
(freed) before any chunk is recomputed and the order of the ``grad_weight``
accumulation does not depend on which chunks were kept: kept and recomputed
chunks give bit-identical gradients.

Why: at Qwen2.5-1.5B shapes (V = 151,936) 16k response tokens give 5 GB of
bf16 logits, and autograd keeps several fp32 copies (27.9 GiB peak measured on
an H100, docs/field-notes.md); on the CPU machine the logits dominate memory.

Precision: the matmul runs in the input dtype (bf16 on GPU: fp32 accumulation
inside the GEMM, bf16 logits out, exactly what the model's own ``lm_head``
would produce); the softmax statistics, log-probs, entropy and the logits'
gradient are computed in fp32. ``grad_weight`` is accumulated in the weight's
dtype with ``addmm_`` (for bf16 that is one rounding per chunk, as with
gradient accumulation over micro-batches).

Maths, with z = logits / T, lse = logsumexp(z), p = softmax(z),
logp = z - lse, H = -sum_j p_j logp_j:
    d logp_t / d z_j = [j = t] - p_j
    d H / d z_j      = -p_j (logp_j + H)
so with upstream gradients g_lp, g_H (per row)
    dz = g_lp * onehot(t) - p * (g_lp + g_H * (logp + H)),  d logits = dz / T.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

#: Rows per chunk when ``chunk_size=None``: the per-chunk ``(rows, V)``
#: buffers of the chosen path must fit this budget (see :func:`auto_chunk_size`).
DEFAULT_CHUNK_BUDGET_BYTES = 640 * 1024 * 1024
#: The CPU path runs its elementwise passes on row blocks of about this size,
#: so that they stay in cache while the matmuls still see large chunks.
CPU_BLOCK_BYTES = 1 << 20
#: Bytes of per-chunk buffers kept from forward to backward when ``keep_bytes``
#: is not given (see the module docstring). Three 1024-row chunks at V = 49,152
#: (SmolLM2, the default model) in fp32 (576 MiB): for a 4,096-token batch that
#: skips 3 of 4 recompute matmuls at 0.23x the naive path's peak memory
#: (docs/benchmarks.md); at most 576 MiB more than full recompute at any shape.
DEFAULT_KEEP_BYTES = 576 * 1024 * 1024

_compiled: dict[str, Callable[..., Any]] = {}


def auto_chunk_size(vocab_size: int, bytes_per_logit: int, budget_bytes: int = DEFAULT_CHUNK_BUDGET_BYTES) -> int:
    """Rows per chunk so that ``rows * V * bytes_per_logit`` fits ``budget_bytes``.

    ``bytes_per_logit`` is what one logit costs across the live per-chunk
    buffers (:func:`_bytes_per_logit`). Rounded down to a multiple of 64 rows
    (GEMM-friendly), at least 64. E.g. V = 151,936, bf16 on CUDA (one buffer,
    2 bytes) with the 640 MiB default: 2,176 rows.
    """
    rows = budget_bytes // max(1, vocab_size * bytes_per_logit)
    return max(64, int(rows) // 64 * 64)


def _use_fused(device: torch.device, dtype: torch.dtype, use_compile: bool) -> bool:
    """Fused pure-function kernels (CUDA, bf16, or when compiling) vs the CPU in-place path."""
    return use_compile or device.type != "cpu" or dtype not in (torch.float32, torch.float64)


def _bytes_per_logit(element_bytes: int, fused: bool, use_compile: bool) -> int:
    if fused and use_compile:
        return element_bytes  # the logits buffer only: the gradient is written in place
    if fused:
        return element_bytes + 3 * 4  # eager: fp32 temporaries
    return element_bytes  # CPU in place: one buffer, row blocks for the temporaries


# ---------------------------------------------------------------- fused kernels
def _forward_stats(logits: torch.Tensor, targets: torch.Tensor, inv_temp: float):
    """(rows, V) logits -> (target log-prob, logsumexp, entropy) per row, in fp32 (fp64 for fp64).

    Written as two passes (row max, then sum e and sum e * z together) so that
    ``torch.compile`` emits two fused reductions and no (rows, V) temporary.
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) * inv_temp
    zmax = z.amax(dim=-1, keepdim=True)
    shifted = z - zmax
    e = torch.exp(shifted)
    s0 = e.sum(-1)
    s1 = (e * shifted).sum(-1)
    log_s0 = torch.log(s0)
    target_logp = shifted.gather(1, targets.unsqueeze(1)).squeeze(1) - log_s0
    return target_logp, zmax.squeeze(1) + log_s0, log_s0 - s1 / s0


def _logits_grad_(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_lp: torch.Tensor,
    grad_ent: torch.Tensor | None,
    inv_temp: float,
) -> None:
    """Overwrite a chunk's logits with d loss / d logits (see module docstring).

    ``grad_lp`` / ``grad_ent`` arrive pre-multiplied by 1/T. Compiled, this is
    one pointwise kernel that reads and writes the same buffer.
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) * inv_temp
    logp = z - lse.unsqueeze(-1)
    p = torch.exp(logp)
    coef = grad_lp.unsqueeze(-1)
    if grad_ent is not None:
        coef = coef + grad_ent.unsqueeze(-1) * (logp + entropy.unsqueeze(-1))
    cols = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    dz = torch.where(cols == targets.unsqueeze(1), grad_lp.unsqueeze(-1), 0.0) - p * coef
    logits.copy_(dz)


def _kernel(name: str, use_compile: bool) -> Callable[..., Any]:
    """The eager function or its ``torch.compile``d version (compiled once per process).

    If the first compiled call fails (compilation happens then, and for the
    gradient kernel it happens in autograd's backward thread, which
    torch.compile has not always supported), the eager function, the same
    maths, is used from then on and the error is kept in :data:`COMPILE_ERRORS`
    (and warned once) so that a benchmark can report it. Later failures propagate.
    """
    fn = {"forward": _forward_stats, "grad": _logits_grad_}[name]
    if not use_compile:
        return fn
    if name not in _compiled:
        _compiled[name] = _with_eager_fallback(name, torch.compile(fn), fn)
    return _compiled[name]


#: First-call torch.compile failures per kernel name (then eager is used).
COMPILE_ERRORS: dict[str, str] = {}


def _with_eager_fallback(name: str, compiled: Callable[..., Any], eager: Callable[..., Any]) -> Callable[..., Any]:
    state = {"tried": False}

    def run(*args: Any) -> Any:
        if name in COMPILE_ERRORS:
            return eager(*args)
        if state["tried"]:
            return compiled(*args)
        state["tried"] = True
        try:
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001  deliberate: eager computes the same thing
            COMPILE_ERRORS[name] = f"{type(exc).__name__}: {str(exc)[:500]}"
            warnings.warn(f"torch.compile of the {name} kernel failed, using eager: {COMPILE_ERRORS[name]}",
                          stacklevel=2)
            return eager(*args)

    return run


# ------------------------------------------------------- CPU (in place, blocked)
def _row_blocks(n_rows: int, vocab_size: int, element_bytes: int):
    """Row slices of about CPU_BLOCK_BYTES, run with one intra-op thread.

    Each block's passes (max, exp, sums) then stay in L2 instead of sweeping
    the whole chunk from RAM per pass, and the blocks are too small for
    intra-op threading to pay for its fork/join (on the 2-core CPU machine,
    under load, single-threaded blocks were 6x faster than threaded whole-chunk
    ops). The matmuls around this keep all threads.
    """
    step = max(1, CPU_BLOCK_BYTES // (vocab_size * element_bytes))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, n_rows, step):
            yield slice(start, min(start + step, n_rows))
    finally:
        torch.set_num_threads(threads)


def _forward_stats_inplace(z: torch.Tensor, targets: torch.Tensor, inv_temp: float, keep: bool = False):
    """CPU variant of :func:`_forward_stats`; consumes ``z`` in place, block by block.

    With ``keep``, ``z`` is left holding the log-probs ``z * inv_temp - lse``,
    computed with exactly the ops :func:`_logits_grad_inplace` uses on
    recomputed logits, so that a kept chunk's gradient is bit-identical.
    """
    rows = z.shape[0]
    out = torch.empty(3, rows, dtype=z.dtype)
    for b in _row_blocks(rows, z.shape[1], z.element_size()):
        zb = z[b]
        if inv_temp != 1.0:
            zb.mul_(inv_temp)
        zmax = zb.amax(dim=-1, keepdim=True)
        if keep:
            shifted = zb - zmax
        else:
            shifted = zb.sub_(zmax)
        target_shifted = shifted.gather(1, targets[b].unsqueeze(1)).squeeze(1)
        e = torch.exp(shifted)
        s0 = e.sum(-1)
        s1 = e.mul_(shifted).sum(-1)
        log_s0 = torch.log(s0)
        out[0, b] = target_shifted - log_s0
        out[1, b] = zmax.squeeze(1) + log_s0
        out[2, b] = log_s0 - s1 / s0
        if keep:
            zb.sub_(out[1, b].unsqueeze(-1))  # logp, as the backward pass would compute it
    return out[0], out[1], out[2]


def _logits_grad_inplace(z, targets, lse, entropy, grad_lp, grad_ent, inv_temp, is_logp: bool = False) -> None:
    """CPU variant of :func:`_logits_grad_`: turns ``z`` into the gradient, block by block.

    ``z`` holds raw logits, or log-probs (``is_logp``: a chunk kept by forward).
    """
    for b in _row_blocks(z.shape[0], z.shape[1], z.element_size()):
        zb = z[b]
        if not is_logp:
            if inv_temp != 1.0:
                zb.mul_(inv_temp)
            zb.sub_(lse[b].unsqueeze(-1))  # logp
        if grad_ent is None:
            zb.exp_().mul_(-grad_lp[b].unsqueeze(-1))  # -p * g_lp
        else:
            p = torch.exp(zb)
            zb.add_(entropy[b].unsqueeze(-1)).mul_(grad_ent[b].unsqueeze(-1)).add_(grad_lp[b].unsqueeze(-1))
            zb.mul_(p).neg_()
    z.scatter_add_(1, targets.unsqueeze(1), grad_lp.unsqueeze(1).to(z.dtype))


# ------------------------------------------------------------ autograd function
def _first_kept_chunk(n: int, chunk_size: int, row_bytes: int, keep_bytes: int) -> int:
    """Start row of the first chunk kept for backward: the last chunks whose buffers fit ``keep_bytes``.

    Every chunk buffer has ``min(chunk_size, n)`` rows (a ragged last chunk
    uses the front of a full one), so each kept chunk costs that much.
    """
    starts = range(0, n, chunk_size)
    n_kept = min(len(starts), keep_bytes // (min(chunk_size, n) * row_bytes))
    return starts[len(starts) - n_kept] if n_kept else n


class _ChunkedHeadLogprobs(torch.autograd.Function):
    """hidden (N, H), weight (V, H), targets (N,) -> fp32 log-probs (N,), entropy (N,)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, chunk_size, use_compile, keep_bytes):  # type: ignore[override]
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp)
        fused = _use_fused(hidden.device, hidden.dtype, use_compile)
        stats = _kernel("forward", use_compile) if fused else _forward_stats_inplace
        keep_from = _first_kept_chunk(n, chunk_size, weight.shape[0] * weight.element_size(), keep_bytes)
        kept: dict[int, torch.Tensor] = {}
        buf = None  # one (chunk rows, V) buffer reused across chunks: a fresh 200 MB one page-faults each time
        for start in range(0, n, chunk_size):
            sl = slice(start, min(start + chunk_size, n))
            keep = start >= keep_from
            buf = buf if buf is not None else hidden.new_empty(min(chunk_size, n), weight.shape[0])
            logits = torch.mm(hidden[sl], weight.t(), out=buf[: sl.stop - start])  # (rows, V), input dtype
            if fused:
                logp[sl], lse[sl], entropy[sl] = stats(logits, targets[sl], inv_temp)
            else:
                logp[sl], lse[sl], entropy[sl] = stats(logits, targets[sl], inv_temp, keep)
            if keep:
                kept[start], buf = buf, None  # fused: raw logits; CPU: log-probs (see _forward_stats_inplace)
            del logits
        del buf
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.inv_temp, ctx.chunk_size, ctx.use_compile, ctx.fused = inv_temp, chunk_size, use_compile, fused
        ctx.kept = kept  # consumed (and freed) by backward; a second backward recomputes
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_lp, grad_ent):  # type: ignore[override]
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_lp is None and grad_ent is None) or not (need_h or need_w):
            ctx.kept = {}
            return None, None, None, None, None, None, None
        n = hidden.shape[0]
        # d/dlogits = (1/T) d/dz: fold 1/T into the per-row upstream gradients.
        grad_lp = (grad_lp.float() if grad_lp is not None else lse.new_zeros(n)) * ctx.inv_temp
        grad_ent = grad_ent.float() * ctx.inv_temp if grad_ent is not None else None
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.empty_like(weight) if need_w else None
        to_grad = _kernel("grad", ctx.use_compile) if ctx.fused else _logits_grad_inplace
        starts = list(range(0, n, ctx.chunk_size))
        buf = None
        for start in reversed(starts):  # kept chunks are the last ones: use them first, then reuse a buffer
            sl = slice(start, min(start + ctx.chunk_size, n))
            kept = ctx.kept.pop(start, None)
            is_logp = kept is not None and not ctx.fused
            buf = kept if kept is not None else buf
            buf = buf if buf is not None else hidden.new_empty(min(ctx.chunk_size, n), weight.shape[0])
            dlogits = buf[: sl.stop - start]
            if kept is None:
                torch.mm(hidden[sl], weight.t(), out=dlogits)
            g_ent = grad_ent[sl] if grad_ent is not None else None
            args = (dlogits, targets[sl], lse[sl], entropy[sl], grad_lp[sl], g_ent, ctx.inv_temp)
            if ctx.fused:
                to_grad(*args)
            else:
                to_grad(*args, is_logp)
            if need_h:
                torch.mm(dlogits, weight, out=grad_hidden[sl])
            if need_w and start == starts[-1]:
                torch.mm(dlogits.t(), hidden[sl], out=grad_weight)
            elif need_w:
                grad_weight.addmm_(dlogits.t(), hidden[sl])
            del dlogits, kept
        return grad_hidden, grad_weight, None, None, None, None, None


def token_logprobs(
    hidden: torch.Tensor,  # (N, H)
    lm_head_weight: torch.Tensor,  # (V, H)
    targets: torch.Tensor,  # (N,) int
    temperature: float = 1.0,
    chunk_size: int | None = 1024,
    use_compile: bool | None = None,
    keep_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token and the policy entropy at each position.

    Equivalent to ``log_softmax(hidden @ W.T / temperature)`` gathered at
    ``targets`` and ``-(p * logp).sum(-1)``, both fp32 ``(N,)``, differentiable
    w.r.t. ``hidden`` and ``lm_head_weight`` through both outputs, without
    materialising ``(N, V)`` logits. ``temperature`` must be the sampling
    temperature so that log-probs match the behaviour policy's (vLLM's
    ``processed_logprobs``). ``chunk_size=None`` picks the rows per chunk from
    :data:`DEFAULT_CHUNK_BUDGET_BYTES`. ``use_compile`` (default: on for CUDA)
    fuses the per-chunk elementwise work with ``torch.compile`` (one chunk
    buffer: the logits' gradient overwrites them); the CPU fp32/fp64 path is
    eager, in place and cache-blocked. ``keep_bytes`` (default
    :data:`DEFAULT_KEEP_BYTES`; 0 recomputes every chunk) bounds the chunk
    buffers kept from forward to backward to skip their recompute matmul:
    whole chunks only, the last ones, ``rows * V * element_size`` bytes each;
    it adds at most that much to peak memory and never changes the results.
    Outputs are fp32 whatever the input dtype. No ``ignore_index``: select the
    response positions first.
    """
    if hidden.dim() != 2 or lm_head_weight.dim() != 2:
        raise ValueError(
            f"hidden must be (N, H) and lm_head_weight (V, H); got {tuple(hidden.shape)} "
            f"and {tuple(lm_head_weight.shape)}"
        )
    if hidden.shape[1] != lm_head_weight.shape[1]:
        raise ValueError(
            f"hidden size mismatch: hidden has H={hidden.shape[1]}, lm_head_weight has H={lm_head_weight.shape[1]}"
        )
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets must be ({hidden.shape[0]},) to match hidden; got {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer token ids, got {targets.dtype}")
    if hidden.dtype != lm_head_weight.dtype:
        raise ValueError(f"dtype mismatch: hidden {hidden.dtype} vs lm_head_weight {lm_head_weight.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if use_compile is None:
        use_compile = hidden.device.type == "cuda"
    if chunk_size is None:
        fused = _use_fused(hidden.device, hidden.dtype, use_compile)
        per_logit = _bytes_per_logit(lm_head_weight.element_size(), fused, use_compile)
        chunk_size = auto_chunk_size(lm_head_weight.shape[0], per_logit)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None for automatic), got {chunk_size}")
    keep_bytes = DEFAULT_KEEP_BYTES if keep_bytes is None else keep_bytes
    if keep_bytes < 0:
        raise ValueError(f"keep_bytes must be >= 0 (or None for the default), got {keep_bytes}")
    if not (torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad)):
        keep_bytes = 0  # no backward will come (e.g. old-policy log-probs under no_grad)
    targets = targets.long()
    hidden = hidden.contiguous()
    return _ChunkedHeadLogprobs.apply(
        hidden, lm_head_weight, targets, 1.0 / float(temperature), int(chunk_size), bool(use_compile),
        int(keep_bytes)
    )


def naive_token_logprobs(
    hidden: torch.Tensor, lm_head_weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: full ``(N, V)`` logits, fp32 ``log_softmax``, gather. For tests and benches only."""
    logits = (hidden @ lm_head_weight.t()).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(1, targets.long().unsqueeze(1)).squeeze(1), entropy
