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

from typing import Any, Callable

import torch

#: Rows per chunk when ``chunk_size=None`` is derived from this budget for the
#: per-chunk ``(rows, V)`` buffers (two of them are live at a time).
DEFAULT_CHUNK_BUDGET_BYTES = 640 * 1024 * 1024

_compiled: dict[str, Callable[..., Any]] = {}


def auto_chunk_size(vocab_size: int, element_bytes: int, budget_bytes: int = DEFAULT_CHUNK_BUDGET_BYTES) -> int:
    """Rows per chunk so that two ``(rows, V)`` buffers fit ``budget_bytes``.

    Rounded down to a multiple of 64 rows (GEMM-friendly), at least 64.
    E.g. V = 151,936 in bf16 with the 640 MiB default gives 1,088 rows.
    """
    rows = budget_bytes // max(1, 2 * vocab_size * element_bytes)
    return max(64, int(rows) // 64 * 64)


# ---------------------------------------------------------------- fused kernels
def _forward_stats(logits: torch.Tensor, targets: torch.Tensor, inv_temp: float):
    """(rows, V) logits -> fp32 (target log-prob, logsumexp, entropy) per row.

    Pure function: compiled into one fused reduction on CUDA; in eager mode it
    makes fp32 temporaries (the CPU path uses :func:`_forward_stats_inplace`).
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) * inv_temp
    lse = torch.logsumexp(z, dim=-1)
    p = torch.exp(z - lse.unsqueeze(-1))
    entropy = lse - (p * z).sum(-1)
    target_logp = z.gather(1, targets.unsqueeze(1)).squeeze(1) - lse
    return target_logp, lse, entropy


def _logits_grad(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_lp: torch.Tensor,
    grad_ent: torch.Tensor | None,
    inv_temp: float,
) -> torch.Tensor:
    """d loss / d logits for one chunk, in the logits' dtype (see module docstring)."""
    z = logits.float() * inv_temp
    logp = z - lse.unsqueeze(-1)
    p = torch.exp(logp)
    coef = grad_lp.unsqueeze(-1)
    if grad_ent is not None:
        coef = coef + grad_ent.unsqueeze(-1) * (logp + entropy.unsqueeze(-1))
    cols = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    onehot = (cols == targets.unsqueeze(1)).to(torch.float32)
    dz = grad_lp.unsqueeze(-1) * onehot - p * coef
    return (dz * inv_temp).to(logits.dtype)


def _kernel(name: str, use_compile: bool) -> Callable[..., Any]:
    """The eager function or its ``torch.compile``d version (compiled once per process)."""
    fn = {"forward": _forward_stats, "grad": _logits_grad}[name]
    if not use_compile:
        return fn
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=True)
    return _compiled[name]


# -------------------------------------------------------------- CPU (in place)
def _forward_stats_inplace(z: torch.Tensor, targets: torch.Tensor, inv_temp: float):
    """CPU variant of :func:`_forward_stats` that reuses ``z`` (fp32) in place.

    Peak extra memory: one more (rows, V) buffer for exp(z - max).
    """
    if inv_temp != 1.0:
        z.mul_(inv_temp)
    zmax = z.amax(dim=-1, keepdim=True)
    z.sub_(zmax)  # z - max
    target_shifted = z.gather(1, targets.unsqueeze(1)).squeeze(1)
    e = torch.exp(z)
    s0 = e.sum(-1)
    s1 = torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).view(-1)  # sum e * (z - max), no temp
    log_s0 = torch.log(s0)
    lse = zmax.squeeze(1) + log_s0
    entropy = log_s0 - s1 / s0
    return target_shifted - log_s0, lse, entropy


def _logits_grad_inplace(z, targets, lse, entropy, grad_lp, grad_ent, inv_temp):
    """CPU variant of :func:`_logits_grad`: turns ``z`` (raw fp32 logits) into the gradient."""
    if inv_temp != 1.0:
        z.mul_(inv_temp)
    z.sub_(lse.unsqueeze(-1))  # logp
    if grad_ent is None:
        z.exp_().mul_(-grad_lp.unsqueeze(-1))  # -p * g_lp
    else:
        p = torch.exp(z)
        z.add_(entropy.unsqueeze(-1)).mul_(grad_ent.unsqueeze(-1)).add_(grad_lp.unsqueeze(-1))
        z.mul_(p).neg_()
        del p
    z.scatter_add_(1, targets.unsqueeze(1), grad_lp.unsqueeze(1).to(z.dtype))
    if inv_temp != 1.0:
        z.mul_(inv_temp)
    return z


# ------------------------------------------------------------ autograd function
class _ChunkedHeadLogprobs(torch.autograd.Function):
    """hidden (N, H), weight (V, H), targets (N,) -> fp32 log-probs (N,), entropy (N,)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, chunk_size, use_compile):  # type: ignore[override]
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp)
        fused = hidden.device.type != "cpu" or hidden.dtype not in (torch.float32, torch.float64)
        fwd = _kernel("forward", use_compile) if fused else None
        for start in range(0, n, chunk_size):
            sl = slice(start, min(start + chunk_size, n))
            logits = hidden[sl] @ weight.t()  # (rows, V), input dtype
            if fused:
                out = fwd(logits, targets[sl], inv_temp)
            else:
                out = _forward_stats_inplace(logits, targets[sl], inv_temp)
            logp[sl], lse[sl], entropy[sl] = out
            del logits, out
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.inv_temp, ctx.chunk_size, ctx.use_compile, ctx.fused = inv_temp, chunk_size, use_compile, fused
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_lp, grad_ent):  # type: ignore[override]
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_lp is None and grad_ent is None) or not (need_h or need_w):
            return None, None, None, None, None, None
        n = hidden.shape[0]
        if grad_lp is None:
            grad_lp = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        grad_lp = grad_lp.float()
        grad_ent = grad_ent.float() if grad_ent is not None else None
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros_like(weight) if need_w else None
        kernel = _kernel("grad", ctx.use_compile) if ctx.fused else None
        for start in range(0, n, ctx.chunk_size):
            sl = slice(start, min(start + ctx.chunk_size, n))
            logits = hidden[sl] @ weight.t()
            g_ent = grad_ent[sl] if grad_ent is not None else None
            args = (logits, targets[sl], lse[sl], entropy[sl], grad_lp[sl], g_ent, ctx.inv_temp)
            dlogits = kernel(*args) if ctx.fused else _logits_grad_inplace(*args)
            del logits
            if need_h:
                torch.mm(dlogits, weight, out=grad_hidden[sl])
            if need_w:
                grad_weight.addmm_(dlogits.t(), hidden[sl])
            del dlogits
        return grad_hidden, grad_weight, None, None, None, None


def token_logprobs(
    hidden: torch.Tensor,  # (N, H)
    lm_head_weight: torch.Tensor,  # (V, H)
    targets: torch.Tensor,  # (N,) int
    temperature: float = 1.0,
    chunk_size: int | None = 1024,
    use_compile: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token and the policy entropy at each position.

    Equivalent to ``log_softmax(hidden @ W.T / temperature)`` gathered at
    ``targets`` and ``-(p * logp).sum(-1)``, both fp32 ``(N,)``, differentiable
    w.r.t. ``hidden`` and ``lm_head_weight`` through both outputs, without
    materialising ``(N, V)`` logits. ``temperature`` must be the sampling
    temperature so that log-probs match the behaviour policy's (vLLM's
    ``processed_logprobs``). ``chunk_size=None`` picks the rows per chunk from
    :data:`DEFAULT_CHUNK_BUDGET_BYTES`. ``use_compile`` (default: on for CUDA)
    fuses the per-chunk elementwise work with ``torch.compile``; the CPU fp32
    path is eager and works in place. No ``ignore_index``: select the response
    positions first.
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
    if chunk_size is None:
        chunk_size = auto_chunk_size(lm_head_weight.shape[0], lm_head_weight.element_size())
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None for automatic), got {chunk_size}")
    if use_compile is None:
        use_compile = hidden.device.type == "cuda"
    targets = targets.long()
    hidden = hidden.contiguous()
    return _ChunkedHeadLogprobs.apply(
        hidden, lm_head_weight, targets, 1.0 / float(temperature), int(chunk_size), bool(use_compile)
    )


def naive_token_logprobs(
    hidden: torch.Tensor, lm_head_weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: full ``(N, V)`` logits, fp32 ``log_softmax``, gather. For tests and benches only."""
    logits = (hidden @ lm_head_weight.t()).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(1, targets.long().unsqueeze(1)).squeeze(1), entropy
